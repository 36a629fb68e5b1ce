//! The forward-proxy mode (`[forward_proxy]`), as tools that honour
//! `HTTPS_PROXY` use it: a `CONNECT server.smartlead.ai:443` is answered
//! with the certificate of `safedelete tls init` and its requests are
//! guarded and audited; other hosts are refused (or tunnelled when allowed);
//! in `gateway_keys` mode the `CONNECT` needs a gateway key.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::process::*;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NAME: &str = "server.smartlead.ai";

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    db: PathBuf,
}

impl Setup {
    /// A config in front of `upstream` with the certificate of `tls init`
    /// and `[forward_proxy]` (plus `tables`).
    fn new(upstream: &str, forward_proxy: &str, tables: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let tables = format!("[forward_proxy]\n{forward_proxy}\n{tables}");
        let (config, db) = write_config(
            dir.path(),
            upstream,
            Extra {
                tables: &tables,
                ..Extra::default()
            },
        );
        let out = Command::new(BIN)
            .args(["tls", "init", "--dir", "tls", "--config"])
            .arg(&config)
            .current_dir(dir.path())
            .output()
            .unwrap();
        stdout(&out);
        Setup { dir, config, db }
    }

    fn start(&self, env: &[(&str, &str)]) -> (Proc, SocketAddr) {
        let mut command = Command::new(BIN);
        command.current_dir(self.dir.path());
        for (k, v) in env {
            command.env(k, v);
        }
        let gw = Proc::start_with(command, &self.config, "info");
        let line = gw
            .logs()
            .lines()
            .find(|l| l.contains("safedelete listening"))
            .unwrap()
            .to_string();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let addr = v["forward_proxy"].as_str().unwrap().parse().unwrap();
        (gw, addr)
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("tls/ca.pem")
    }

    fn bundle(&self) -> PathBuf {
        self.dir.path().join("tls/ca-bundle.pem")
    }
}

/// Sends `CONNECT host:port` (with `auth` as `Proxy-Authorization`) and
/// returns the proxy's answer head and the connection.
async fn connect(
    proxy: SocketAddr,
    target: &str,
    auth: Option<&str>,
) -> (String, tokio::net::TcpStream) {
    let mut tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let auth = auth
        .map(|a| format!("Proxy-Authorization: {a}\r\n"))
        .unwrap_or_default();
    tcp.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth}\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tcp.read(&mut byte).await.unwrap();
        assert_eq!(n, 1, "the proxy closed before answering: {head:?}");
        head.push(byte[0]);
    }
    (String::from_utf8(head).unwrap(), tcp)
}

/// One HTTPS request through the proxy, trusting only `ca_file`.
async fn https_via(proxy: SocketAddr, ca_file: &Path, auth: Option<&str>, request: &str) -> String {
    let (head, tcp) = connect(proxy, &format!("{NAME}:443"), auth).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut std::fs::read(ca_file).unwrap().as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(rustls::pki_types::ServerName::try_from(NAME).unwrap(), tcp)
        .await
        .expect("the gateway answers for server.smartlead.ai inside the tunnel");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut answer))
        .await
        .expect("answer within 20 s")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

fn request(method: &str, target: &str) -> String {
    format!("{method} {target} HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
}

/// A command with the machine's proxy settings taken away.
fn tool(program: &str) -> Command {
    let mut command = Command::new(program);
    for var in [
        "NO_PROXY",
        "no_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "CURL_CA_BUNDLE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
    ] {
        command.env_remove(var);
    }
    command
}

fn installed(program: &str, probe: &[&str]) -> bool {
    Command::new(program)
        .args(probe)
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_behind_https_proxy_is_guarded_and_audited() {
    let up = fake_smartlead::start(fake_smartlead::FakeConfig::default())
        .await
        .unwrap();
    let setup = Setup::new(&up.url(), "enabled = true\nlisten = \"127.0.0.1:0\"\n", "");
    let (gw, proxy) = setup.start(&[]);

    let answer = https_via(
        proxy,
        &setup.ca(),
        None,
        &request("GET", "/api/v1/campaigns/101?api_key=sl_test_key"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"id\":101"), "{answer}");
    let answer = https_via(
        proxy,
        &setup.ca(),
        None,
        &request("DELETE", "/api/v1/campaigns/101?api_key=sl_test_key"),
    )
    .await;
    assert!(answer.contains("\"action\":\"archived\""), "{answer}");
    assert!(!up.requests().iter().any(|r| r.method == "DELETE"));

    // curl and Python's requests, as a user runs them.
    let url = format!("https://{NAME}/api/v1/campaigns/102?api_key=sl_test_key");
    if installed("curl", &["--version"]) {
        let out = tool("curl")
            .env("HTTPS_PROXY", format!("http://{proxy}"))
            .env("SSL_CERT_FILE", setup.bundle())
            .args(["-sS", "--fail", &url])
            .output()
            .unwrap();
        assert!(stdout(&out).contains("\"id\":102"));
    } else {
        eprintln!("curl is not installed: its part of this test is skipped");
    }
    if installed("python3", &["-c", "import requests"]) {
        let out = tool("python3")
            .env("HTTPS_PROXY", format!("http://{proxy}"))
            .env("REQUESTS_CA_BUNDLE", setup.bundle())
            .args([
                "-c",
                "import requests, sys; r = requests.delete(sys.argv[1]); print(r.status_code, r.text)",
                &url,
            ])
            .output()
            .unwrap();
        let printed = stdout(&out);
        assert!(printed.starts_with("200 "), "{printed}");
        assert!(printed.contains("\"action\":\"archived\""), "{printed}");
    } else {
        eprintln!("python3 with requests is not installed: its part of this test is skipped");
    }

    // Every request inside the tunnels is in the trail, as https.
    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = audit_rows(setup.db.as_path()).await;
        if rows.iter().filter(|r| r.method == "DELETE").count() >= 1 && rows.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deletes: Vec<_> = rows
        .iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.action.clone())
        .collect();
    assert!(
        deletes.contains(&Some("archived".to_string())),
        "{deletes:?}"
    );
    assert_eq!(
        up.requests()[0].header("x-forwarded-proto"),
        Some(&b"https"[..])
    );
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_to_another_host_is_refused_unless_allowed() {
    let up = fake_smartlead::start(fake_smartlead::FakeConfig::default())
        .await
        .unwrap();
    let other = up.addr().to_string();
    let setup = Setup::new(&up.url(), "enabled = true\nlisten = \"127.0.0.1:0\"\n", "");
    let (_gw, proxy) = setup.start(&[]);
    let (head, _) = connect(proxy, "example.com:443", None).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let (head, _) = connect(proxy, &other, None).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(up.requests().is_empty(), "nothing was tunnelled");

    let setup = Setup::new(
        &up.url(),
        "enabled = true\nlisten = \"127.0.0.1:0\"\nallow_other_hosts = true\n",
        "",
    );
    let (_gw, proxy) = setup.start(&[]);
    let (head, mut tunnel) = connect(proxy, &other, None).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Bytes go through unchanged: a plain request straight to the fake.
    tunnel
        .write_all(b"GET /api/v1/campaigns/103?api_key=sl_test_key HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tunnel.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.contains("\"id\":103"), "{answer}");
    assert!(
        up.requests()[0].header("via").is_none(),
        "a blind tunnel adds nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_gateway_keys_the_connect_needs_one() {
    let up = fake_smartlead::start(fake_smartlead::FakeConfig::default())
        .await
        .unwrap();
    let setup = Setup::new(
        &up.url(),
        "enabled = true\nlisten = \"127.0.0.1:0\"\n",
        "[identity]\nmode = \"gateway_keys\"\n",
    );
    let env = [("SAFEDELETE_SMARTLEAD_API_KEY", "sl_test_key")];
    let out = Command::new(BIN)
        .args(["keys", "create", "--name", "alice", "--json", "--config"])
        .arg(&setup.config)
        .current_dir(setup.dir.path())
        .env("SAFEDELETE_SMARTLEAD_API_KEY", "sl_test_key")
        .output()
        .unwrap();
    let created: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    let (_gw, proxy) = setup.start(&env);

    let (head, _) = connect(proxy, &format!("{NAME}:443"), None).await;
    assert!(head.starts_with("HTTP/1.1 407"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("proxy-authenticate: basic realm=\"safedelete\""),
        "{head}"
    );
    let wrong = format!("Basic {}", b64("alice:sdg_not_a_key"));
    let (head, _) = connect(proxy, &format!("{NAME}:443"), Some(&wrong)).await;
    assert!(head.starts_with("HTTP/1.1 407"), "{head}");

    let auth = format!("Basic {}", b64(&format!("alice:{key}")));
    let answer = https_via(
        proxy,
        &setup.ca(),
        Some(&auth),
        &request("GET", &format!("/api/v1/campaigns/101?api_key={key}")),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // SmartLead got the account's key, never the gateway key.
    let seen = up.requests();
    assert!(
        seen.iter()
            .any(|r| r.target == "/api/v1/campaigns/101?api_key=sl_test_key"),
        "{:?}",
        seen.iter().map(|r| &r.target).collect::<Vec<_>>()
    );
    assert!(!seen.iter().any(|r| r.target.contains(&key)));
}

#[test]
fn forward_proxy_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    for (table, says) in [
        (
            "[forward_proxy]\nenabled = true\n",
            "forward_proxy.enabled: needs [listen_tls]",
        ),
        (
            "[forward_proxy]\nlisten = \"127.0.0.1:3128\"\n",
            "forward_proxy.listen: is set but forward_proxy.enabled is not true",
        ),
        ("[forward_proxy]\nenabeld = true\n", "enabeld"),
    ] {
        let (config, _) = write_config(
            dir.path(),
            "http://127.0.0.1:9",
            Extra {
                tables: table,
                ..Extra::default()
            },
        );
        let out = Command::new(BIN)
            .args(["check-config", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{table}");
        assert!(stderr(&out).contains(says), "{table}: {}", stderr(&out));
    }
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}
