//! `safedelete tls init` and `tls renew`, followed as a user would: the
//! printed trust settings and hosts line, a client with SmartLead's name
//! resolved to the gateway, the certificate's expiry in `/metrics` and the
//! warning at start when it is close.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::process::*;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NAME: &str = "server.smartlead.ai";

/// `safedelete tls ARGS...` run in `dir`.
fn tls(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("tls")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// The value of `export VAR=VALUE` in `tls init`'s output.
fn exported(output: &str, var: &str) -> PathBuf {
    let prefix = format!("export {var}=");
    let line = output
        .lines()
        .find_map(|l| l.trim().split_once(&prefix).map(|(_, v)| v.to_string()))
        .unwrap_or_else(|| panic!("no `{prefix}` in:\n{output}"));
    PathBuf::from(line)
}

/// An HTTPS request to `name` with the name resolved to `addr` (what the
/// hosts line does), trusting only the CAs in `ca_file`; the raw answer.
async fn https(addr: SocketAddr, ca_file: &Path, request: &str) -> String {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca_file).unwrap();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(NAME).unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .expect("the gateway's certificate is trusted through the printed CA file");
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

/// A date as `YYYY-MM-DD`, as `tls init` prints it.
fn date(unix: f64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp(unix as i64).unwrap();
    format!(
        "{:04}-{:02}-{:02}",
        at.year(),
        u8::from(at.month()),
        at.day()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_init_output_is_usable_as_written() {
    let up = fake_smartlead::start(fake_smartlead::FakeConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = write_config(dir.path(), &up.url(), Extra::default());

    let out = tls(
        dir.path(),
        &[
            "init",
            "--dir",
            "tls",
            "--config",
            "safedelete.toml",
            "--address",
            "192.0.2.10",
        ],
    );
    let printed = stdout(&out);
    assert!(
        printed.contains(&format!("   192.0.2.10 {NAME}\n")),
        "{printed}"
    );
    for var in [
        "NODE_EXTRA_CA_CERTS",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "SSL_CERT_FILE",
    ] {
        assert!(exported(&printed, var).is_absolute(), "{var}: {printed}");
    }
    assert!(printed.contains("update-ca-certificates"), "{printed}");
    assert!(printed.contains("listen = \"0.0.0.0:443\""), "{printed}");
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(
        written.contains("[listen_tls]\ncert_file = \"tls/server.pem\""),
        "{written}"
    );

    // The config as written, run from the directory it was written in.
    let mut command = Command::new(BIN);
    command.current_dir(dir.path());
    let gw = Proc::start_with(command, &config, "info");
    assert!(!gw.logs().contains("expires soon"), "{}", gw.logs());

    // Node's setting (the CA alone) and curl's (the bundle) both work.
    for var in ["NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE"] {
        let answer = https(
            gw.proxy,
            &exported(&printed, var),
            &request("GET", "/api/v1/campaigns/101?api_key=sl_test_key"),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{var}: {answer}");
        assert!(answer.contains("\"id\":101"), "{answer}");
    }
    // A guarded delete over it is guarded (archived by default).
    let answer = https(
        gw.proxy,
        &exported(&printed, "NODE_EXTRA_CA_CERTS"),
        &request("DELETE", "/api/v1/campaigns/101?api_key=sl_test_key"),
    )
    .await;
    assert!(answer.contains("\"action\":\"archived\""), "{answer}");
    assert!(!up.requests().iter().any(|r| r.method == "DELETE"));

    // curl, when there is one, with each setting printed for it; what is
    // already in the environment is what the output says to replace.
    if Command::new("curl").arg("--version").output().is_ok() {
        for var in ["CURL_CA_BUNDLE", "SSL_CERT_FILE"] {
            let out = Command::new("curl")
                .env_remove("CURL_CA_BUNDLE")
                .env_remove("SSL_CERT_DIR")
                .env(var, exported(&printed, var))
                .args(["-sS", "--fail", "--connect-to"])
                .arg(format!("{NAME}:443:127.0.0.1:{}", gw.proxy.port()))
                .arg(format!(
                    "https://{NAME}/api/v1/campaigns/102?api_key=sl_test_key"
                ))
                .output()
                .unwrap();
            assert!(stdout(&out).contains("\"id\":102"), "{var}");
        }
    } else {
        eprintln!("curl is not installed: its part of this test is skipped");
    }

    // The certificate's end is exported, and it is the printed date.
    let metrics = reqwest_metrics(gw.admin).await;
    let expiry = metric_value(&metrics, "safedelete_tls_cert_expiry_timestamp_seconds");
    assert!(
        printed.contains(&format!("valid until {}", date(expiry))),
        "{printed}"
    );
    let left = expiry - SystemTime::UNIX_EPOCH.elapsed().unwrap().as_secs_f64();
    assert!(left > 390.0 * 86_400.0 && left < 398.0 * 86_400.0, "{left}");
    drop(gw);

    // Renewal: a new certificate from the same CA, trusted as before.
    let old = std::fs::read(dir.path().join("tls/server.pem")).unwrap();
    let out = tls(dir.path(), &["renew", "--dir", "tls"]);
    assert!(stdout(&out).contains(&format!("for {NAME}, valid until")));
    assert_ne!(
        std::fs::read(dir.path().join("tls/server.pem")).unwrap(),
        old
    );
    let mut command = Command::new(BIN);
    command.current_dir(dir.path());
    let gw = Proc::start_with(command, &config, "info");
    let answer = https(
        gw.proxy,
        &exported(&printed, "NODE_EXTRA_CA_CERTS"),
        &request("GET", "/api/v1/campaigns/102?api_key=sl_test_key"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let renewed = metric_value(
        &reqwest_metrics(gw.admin).await,
        "safedelete_tls_cert_expiry_timestamp_seconds",
    );
    assert!(renewed >= expiry, "{renewed} < {expiry}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_init_adds_its_certificate_beside_the_listeners_own_and_sni_chooses() {
    let up = fake_smartlead::start(fake_smartlead::FakeConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let own = TestPki::new(); // the listener's own certificate, for localhost
    let (own_ca, own_cert, own_key) = own.write(dir.path());
    let tables = format!(
        "# ours\n[listen_tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        own_cert.display().to_string(),
        own_key.display().to_string()
    );
    let (config, _) = write_config(
        dir.path(),
        &up.url(),
        Extra {
            tables: &tables,
            ..Extra::default()
        },
    );
    let out = tls(
        dir.path(),
        &["init", "--dir", "tls", "--config", "safedelete.toml"],
    );
    let printed = stdout(&out);
    assert!(
        printed.contains("Added to [[listen_tls.certificates]]"),
        "{printed}"
    );
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(written.contains("# ours\n[listen_tls]"), "{written}");
    assert!(
        written.contains("[[listen_tls.certificates]]\ncert_file = \"tls/server.pem\""),
        "{written}"
    );
    // Running it again changes nothing.
    let again = tls(
        dir.path(),
        &["init", "--dir", "tls", "--config", "safedelete.toml"],
    );
    assert!(
        !again.status.success(),
        "the CA is there: {}",
        stderr(&again)
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), written);

    let mut command = Command::new(BIN);
    command.current_dir(dir.path());
    let gw = Proc::start_with(command, &config, "info");
    // SmartLead's name gets the tls init certificate ...
    let answer = https(
        gw.proxy,
        &dir.path().join("tls/ca.pem"),
        &request("GET", "/api/v1/campaigns/101?api_key=sl_test_key"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // ... the listener's own name (and no name at all) its own ...
    for sni in [Some("localhost"), None] {
        let session = handshake(gw.proxy, &own_ca, sni).await;
        assert!(session.is_ok(), "{sni:?}: {session:?}");
    }
    // ... and any other name a TLS alert.
    let refused = handshake(gw.proxy, &own_ca, Some("elsewhere.example")).await;
    let err = refused.unwrap_err();
    assert!(err.contains("AccessDenied"), "{err}");
    let logged = || {
        gw.logs()
            .contains("a client asked for a name no certificate of [listen_tls] has")
    };
    for _ in 0..100 {
        if logged() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(logged(), "{}", gw.logs());

    let out = Command::new(BIN)
        .args(["check-config", "--config", "safedelete.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        stdout(&out).contains("certificates = [{ cert_file = \"tls/server.pem\""),
        "{}",
        stdout(&out)
    );
}

/// A TLS handshake with the listener asking for `sni` (none: by address),
/// trusting only `ca_file`.
async fn handshake(addr: SocketAddr, ca_file: &Path, sni: Option<&str>) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut std::fs::read(ca_file).unwrap().as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = match sni {
        Some(sni) => rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap(),
        None => {
            config.enable_sni = false;
            rustls::pki_types::ServerName::from(addr.ip())
        }
    };
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
}

#[test]
fn tls_init_names_and_renewal_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let out = tls(
        dir.path(),
        &["init", "--dir", "tls", "--name", "not a host"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--name \"not a host\" is not a DNS name"),
        "{}",
        stderr(&out)
    );
    assert!(
        !dir.path().join("tls").exists(),
        "nothing may be left behind"
    );
    let out = tls(dir.path(), &["renew", "--dir", "tls"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("has no CA"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_close_to_its_end_is_warned_about_at_start() {
    use rcgen::{CertificateParams, KeyPair};
    let up = fake_smartlead::start(fake_smartlead::FakeConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![NAME.to_string()]).unwrap();
    let now = SystemTime::now();
    params.not_before = (now - Duration::from_secs(86_400)).into();
    params.not_after = (now + Duration::from_secs(3 * 86_400 + 3600)).into();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
    let tables = format!(
        "[listen_tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        dir.path().join("cert.pem").display().to_string(),
        dir.path().join("key.pem").display().to_string()
    );
    let (config, _) = write_config(
        dir.path(),
        &up.url(),
        Extra {
            tables: &tables,
            ..Extra::default()
        },
    );
    let gw = Proc::start(&config, "info");
    let logs = gw.logs();
    let warning = logs
        .lines()
        .find(|l| l.contains("certificate expires soon"))
        .unwrap_or_else(|| panic!("no warning in {logs}"));
    assert!(warning.contains("\"days_left\":3"), "{warning}");
    assert!(warning.contains("tls renew"), "{warning}");
    let expiry = metric_value(
        &reqwest_metrics(gw.admin).await,
        "safedelete_tls_cert_expiry_timestamp_seconds",
    );
    let expected = (now + Duration::from_secs(3 * 86_400 + 3600))
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    assert!((expiry - expected).abs() <= 1.0, "{expiry} vs {expected}");
}

async fn reqwest_metrics(admin: SocketAddr) -> String {
    String::from_utf8(get(&format!("http://{admin}/metrics")).await.body.to_vec()).unwrap()
}

fn metric_value(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
        .trim()
        .parse()
        .unwrap()
}
