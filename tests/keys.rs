//! Gateway keys as operators manage them: `safedelete keys create | list |
//! revoke | rotate` run as the real binary on a real database file, and the
//! same over the admin API of a running gateway. A key is shown once and
//! stored only as its SHA-256; every action is in the audit trail, chained.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use common::process::{contains, stderr, stdout};
use common::*;
use http::Request;
use http_body_util::Full;
use serde_json::Value;
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_safedelete");
const TOKEN: &str = "admin-token-0123456789";
const OS_USER: &str = "carol-ops";

/// A config and its database in a temp dir.
struct Setup {
    // Kept for the life of the setup: the temp dir goes when it does.
    _dir: tempfile::TempDir,
    config: PathBuf,
    db: PathBuf,
}

/// The `[[smartlead.accounts]]` tables for these names, their keys in files.
fn accounts_toml(dir: &Path, names: &[&str]) -> String {
    let mut text = String::new();
    for name in names {
        let key_file = dir.join(format!("{name}.key"));
        // One account per SmartLead key: each gets its own.
        std::fs::write(&key_file, format!("{KEY}_{name}")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        text.push_str(&format!(
            "[[smartlead.accounts]]\nname = \"{name}\"\napi_key_file = {:?}\n\n",
            key_file.display().to_string()
        ));
    }
    text
}

fn setup_with(accounts: &[&str]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data").join("safedelete.db");
    let config = dir.path().join("safedelete.toml");
    let text = format!(
        "[database]\npath = {:?}\n\n{}",
        db.display().to_string(),
        accounts_toml(dir.path(), accounts)
    );
    std::fs::write(&config, text).unwrap();
    Setup {
        _dir: dir,
        config,
        db,
    }
}

/// One account, `default`.
fn setup() -> Setup {
    setup_with(&["default"])
}

impl Setup {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .arg("--config")
            .arg(&self.config)
            .env("USER", OS_USER)
            .env_remove("SAFEDELETE_SMARTLEAD_API_KEY")
            .env_remove("SAFEDELETE_DATABASE");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// A command expected to fail; its stderr.
    fn refused(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "{args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        stderr(&out)
    }

    fn json(&self, args: &[&str]) -> Value {
        let text = stdout(&self.run(args));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    fn list(&self) -> Vec<Value> {
        self.json(&["keys", "list", "--json"])
            .as_array()
            .unwrap()
            .clone()
    }

    /// The database and its WAL, as bytes.
    fn stored_bytes(&self) -> Vec<u8> {
        let mut bytes = std::fs::read(&self.db).unwrap();
        let mut wal = self.db.clone().into_os_string();
        wal.push("-wal");
        if let Ok(more) = std::fs::read(wal) {
            bytes.extend(more);
        }
        bytes
    }
}

fn is_gateway_key(text: &str) -> bool {
    text.strip_prefix("sdg_").is_some_and(|body| {
        body.len() == 43
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_time(text: &str) -> SystemTime {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::parse(text, &Rfc3339)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .into()
}

/// Whether `at` is `from_now` from now, give or take a minute.
fn about(at: &str, from_now: Duration) -> bool {
    let expected = SystemTime::now() + from_now;
    let at = parse_time(at);
    let diff = at
        .duration_since(expected)
        .or_else(|_| expected.duration_since(at))
        .unwrap();
    diff < Duration::from_secs(60)
}

fn field_names(v: &Value) -> Vec<&str> {
    let mut names: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    names.sort();
    names
}

#[test]
fn create_prints_the_key_once_and_json_has_exactly_the_documented_fields() {
    let s = setup();
    let text = stdout(&s.run(&[
        "keys",
        "create",
        "--name",
        "alice",
        "--expires",
        "90d",
        "--rate-limit",
        "30/min",
    ]));
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with(
            "Created gateway key \"alice\" for SmartLead account \"default\" (expires "
        ) && lines[0].ends_with("; rate limit 30/min)."),
        "{text}"
    );
    assert!(lines[1].contains("shown only now"), "{text}");
    assert_eq!(lines.len(), 3, "{text}");
    assert!(is_gateway_key(lines[2]), "{text}");

    let bob = s.json(&["keys", "create", "--name", "bob", "--json"]);
    assert_eq!(
        field_names(&bob),
        ["account", "expires_at", "key", "name", "rate_limit"]
    );
    assert_eq!(bob["name"], "bob");
    assert_eq!(bob["account"], "default");
    assert!(bob["expires_at"].is_null() && bob["rate_limit"].is_null());
    let key = bob["key"].as_str().unwrap();
    assert!(is_gateway_key(key), "{key}");
    assert_ne!(key, lines[2], "every key is new");

    let carl = s.json(&[
        "keys",
        "create",
        "--name",
        "carl",
        "--expires",
        "12h",
        "--rate-limit",
        "10/2s",
        "--json",
    ]);
    assert!(
        about(
            carl["expires_at"].as_str().unwrap(),
            Duration::from_secs(12 * 3600)
        ),
        "{carl}"
    );
    assert_eq!(carl["rate_limit"], "10/2s");
    // An RFC 3339 expiry is kept as that moment, in UTC.
    let dora = s.json(&[
        "keys",
        "create",
        "--name",
        "dora",
        "--expires",
        "2099-01-02T12:00:00+02:00",
        "--json",
    ]);
    assert_eq!(dora["expires_at"], "2099-01-02T10:00:00.000Z");
}

#[test]
fn the_database_holds_only_the_keys_sha256_never_the_key() {
    let s = setup();
    let created = s.json(&["keys", "create", "--name", "alice", "--json"]);
    let rotated = s.json(&["keys", "rotate", "alice", "--json"]);
    let stored = s.stored_bytes();
    for shown in [&created, &rotated] {
        let key = shown["key"].as_str().unwrap();
        assert!(
            !contains(&stored, key.as_bytes()),
            "the key is in the database"
        );
        let body = key.strip_prefix("sdg_").unwrap();
        assert!(
            !contains(&stored, body.as_bytes()),
            "the key is in the database"
        );
        assert!(
            contains(&stored, sha256_hex(key).as_bytes()),
            "its SHA-256 is what the gateway looks keys up by"
        );
    }
    // Nor is it in anything read back.
    let everything = format!(
        "{}{}{}",
        stdout(&s.run(&["keys", "list"])),
        stdout(&s.run(&["keys", "list", "--json"])),
        stdout(&s.run(&["audit", "--json"]))
    );
    assert!(!everything.contains("sdg_"), "{everything}");
}

#[test]
fn list_shows_each_key_with_its_account_and_state_and_never_a_key() {
    let s = setup_with(&["default", "eu"]);
    let empty = stdout(&s.run(&["keys", "list"]));
    assert!(
        empty.contains("no gateway keys yet") && empty.contains("keys create --name"),
        "{empty}"
    );
    assert_eq!(s.list().len(), 0);

    stdout(&s.run(&[
        "keys",
        "create",
        "--name",
        "alice",
        "--rate-limit",
        "30/min",
    ]));
    stdout(&s.run(&["keys", "create", "--name", "n8n-prod", "--account", "eu"]));
    stdout(&s.run(&["keys", "create", "--name", "bob"]));
    stdout(&s.run(&["keys", "revoke", "bob"]));

    let table = stdout(&s.run(&["keys", "list"]));
    let lines: Vec<&str> = table.lines().collect();
    for column in [
        "NAME",
        "ACCOUNT",
        "CREATED",
        "LAST USED",
        "EXPIRES",
        "STATE",
        "RATE LIMIT",
    ] {
        assert!(lines[0].contains(column), "{table}");
    }
    let row = |name: &str| {
        *lines
            .iter()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name}:\n{table}"))
    };
    let words = |line: &str| {
        line.split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let alice = words(row("alice"));
    assert_eq!(alice[1], "default");
    assert_eq!(alice[3], "-", "never used: {table}");
    assert_eq!(alice[4], "-", "never expires: {table}");
    assert_eq!(&alice[5..], ["active", "30/min"]);
    let n8n = words(row("n8n-prod"));
    assert_eq!((n8n[1].as_str(), n8n[5].as_str()), ("eu", "active"));
    assert_eq!(words(row("bob"))[5], "revoked");
    assert!(!table.contains("sdg_"), "{table}");

    let listed = s.list();
    assert_eq!(listed.len(), 3);
    let by_name = |name: &str| listed.iter().find(|k| k["name"] == name).unwrap().clone();
    assert_eq!(by_name("alice")["state"], "active");
    assert_eq!(by_name("alice")["rate_limit"], "30/min");
    assert_eq!(by_name("alice")["created_by"], OS_USER);
    assert_eq!(by_name("n8n-prod")["account"], "eu");
    assert_eq!(by_name("bob")["state"], "revoked");
    assert_eq!(by_name("bob")["revoked_by"], OS_USER);
    for key in &listed {
        assert!(
            key.get("key").is_none() && key.get("key_sha256").is_none(),
            "{key}"
        );
    }
}

#[test]
fn a_name_in_use_is_refused_with_rotate_or_revoke_as_the_way_out() {
    let s = setup();
    stdout(&s.run(&["keys", "create", "--name", "alice"]));
    let before = s.list();
    let out = s.run(&["keys", "create", "--name", "alice"]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no key printed");
    let err = stderr(&out);
    assert!(
        err.contains("\"alice\" exists already")
            && err.contains("safedelete keys rotate alice")
            && err.contains("revoke"),
        "{err}"
    );
    assert_eq!(s.list(), before, "the first key is untouched");
    // Once revoked, the name may be given out again.
    stdout(&s.run(&["keys", "revoke", "alice"]));
    stdout(&s.run(&["keys", "create", "--name", "alice"]));
    assert_eq!(s.list().len(), 2);
}

#[test]
fn bad_input_is_refused_with_what_to_do_and_makes_no_key() {
    let s = setup_with(&["default", "eu"]);
    let bad_name = s.refused(&["keys", "create", "--name", "alice smith"]);
    assert!(
        bad_name.contains("not a key name") && bad_name.contains("for example"),
        "{bad_name}"
    );
    let unknown = s.refused(&["keys", "create", "--name", "alice", "--account", "us"]);
    assert!(
        unknown.contains("no SmartLead account \"us\"") && unknown.contains("\"default\", \"eu\""),
        "{unknown}"
    );
    let past = s.refused(&[
        "keys",
        "create",
        "--name",
        "alice",
        "--expires",
        "2020-01-01T00:00:00Z",
    ]);
    assert!(past.contains("in the past"), "{past}");
    let nonsense = s.refused(&["keys", "create", "--name", "alice", "--expires", "soon"]);
    assert!(
        nonsense.contains("90d") && nonsense.contains("RFC 3339"),
        "{nonsense}"
    );
    let rate = s.refused(&["keys", "create", "--name", "alice", "--rate-limit", "lots"]);
    assert!(
        rate.contains("--rate-limit") && rate.contains("30/min"),
        "{rate}"
    );
    let grace = s.refused(&["keys", "rotate", "alice", "--grace", "a while"]);
    assert!(grace.contains("grace period"), "{grace}");
    let unknown_name = s.refused(&["keys", "revoke", "alice"]);
    assert!(
        unknown_name.contains("no valid key is named \"alice\""),
        "{unknown_name}"
    );
    assert!(s
        .refused(&["keys", "rotate", "alice"])
        .contains("keys list"),);
    assert_eq!(s.list().len(), 0, "nothing was made");
}

#[test]
fn without_a_smartlead_account_the_error_says_how_to_configure_one() {
    let s = setup_with(&[]);
    let err = s.refused(&["keys", "create", "--name", "alice"]);
    assert!(
        err.contains("SAFEDELETE_SMARTLEAD_API_KEY") && err.contains("[[smartlead.accounts]]"),
        "{err}"
    );
    // Several accounts, none of them `default`: which one must be said.
    let two = setup_with(&["eu", "us"]);
    let err = two.refused(&["keys", "create", "--name", "alice"]);
    assert!(
        err.contains("\"eu\", \"us\"") && err.contains("--account"),
        "{err}"
    );
    let made = two.json(&[
        "keys",
        "create",
        "--name",
        "alice",
        "--account",
        "us",
        "--json",
    ]);
    assert_eq!(made["account"], "us");
    // The environment's key is the `default` account.
    let out = s
        .command(&["keys", "create", "--name", "alice", "--json"])
        .env("SAFEDELETE_SMARTLEAD_API_KEY", KEY)
        .output()
        .unwrap();
    let made: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(made["account"], "default");
}

#[test]
fn revoke_stops_the_current_key_and_those_in_their_grace_period() {
    let s = setup();
    stdout(&s.run(&["keys", "create", "--name", "alice"]));
    stdout(&s.run(&["keys", "rotate", "alice"]));
    let text = stdout(&s.run(&["keys", "revoke", "alice"]));
    assert!(
        text.contains("Revoked 2 keys named \"alice\"")
            && text.contains("within a second on every gateway"),
        "{text}"
    );
    let listed = s.list();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|k| k["state"] == "revoked"), "{listed:?}");
    let again = s.refused(&["keys", "revoke", "alice"]);
    assert!(again.contains("no valid key"), "{again}");
}

#[test]
fn rotate_makes_a_new_key_and_the_old_one_works_until_the_grace_ends() {
    let s = setup();
    let old = s.json(&[
        "keys",
        "create",
        "--name",
        "alice",
        "--rate-limit",
        "5/s",
        "--json",
    ]);
    let new = s.json(&["keys", "rotate", "alice", "--grace", "2h", "--json"]);
    assert_eq!(
        field_names(&new),
        [
            "account",
            "expires_at",
            "key",
            "name",
            "old_valid_until",
            "rate_limit"
        ]
    );
    assert!(is_gateway_key(new["key"].as_str().unwrap()));
    assert_ne!(new["key"], old["key"]);
    assert_eq!(new["rate_limit"], "5/s", "the new key keeps the limit");
    let until = new["old_valid_until"].as_str().unwrap();
    assert!(about(until, Duration::from_secs(7200)), "{new}");

    let listed = s.list();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let old_row = listed.iter().find(|k| k["state"] == "rotated").unwrap();
    let new_row = listed.iter().find(|k| k["state"] == "active").unwrap();
    assert_eq!(old_row["expires_at"], until);
    assert!(new_row["expires_at"].is_null());
    assert_eq!(new_row["account"], "default");

    let text = stdout(&s.run(&["keys", "rotate", "alice", "--grace", "30m"]));
    assert!(text.contains("the old key keeps working until"), "{text}");
    assert!(
        text.lines().last().is_some_and(is_gateway_key),
        "the new key ends the output: {text}"
    );
}

#[test]
fn every_key_action_is_audited_under_the_os_user_and_the_chain_verifies() {
    let s = setup();
    let created = s.json(&[
        "keys",
        "create",
        "--name",
        "alice",
        "--expires",
        "90d",
        "--json",
    ]);
    let rotated = s.json(&["keys", "rotate", "alice", "--grace", "1h", "--json"]);
    stdout(&s.run(&["keys", "revoke", "alice"]));
    // Without $USER, the uid names who acted.
    let out = s
        .command(&["keys", "create", "--name", "bob"])
        .env_remove("USER")
        .output()
        .unwrap();
    stdout(&out);

    let text = stdout(&s.run(&["audit", "--json"]));
    for key in [&created["key"], &rotated["key"]] {
        assert!(!text.contains(key.as_str().unwrap()), "a key in the trail");
    }
    let mut records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    records.reverse();
    let ops: Vec<&str> = records
        .iter()
        .map(|r| r["operation"].as_str().unwrap())
        .collect();
    assert_eq!(
        ops,
        ["key.create", "key.rotate", "key.revoke", "key.create"]
    );
    for (record, path) in records
        .iter()
        .zip(["keys create", "keys rotate", "keys revoke"])
    {
        assert_eq!(record["method"], "CLI");
        assert_eq!(record["path"], path);
        assert_eq!(record["actor_label"], OS_USER);
        assert_eq!(record["target"], "key:alice");
        assert_eq!(record["account"], "default");
        assert_eq!(record["status"], 200);
    }
    let detail = |i: usize| records[i]["detail"].as_str().unwrap().to_string();
    assert!(
        detail(0).contains(created["expires_at"].as_str().unwrap()),
        "{}",
        detail(0)
    );
    assert!(
        detail(1).contains("1h")
            && detail(1).contains(rotated["old_valid_until"].as_str().unwrap())
    );
    assert!(detail(2).contains("2 keys revoked"), "{}", detail(2));
    assert!(
        records[3]["actor_label"]
            .as_str()
            .unwrap()
            .starts_with("uid "),
        "{}",
        records[3]
    );

    let verified = stdout(&s.run(&["audit", "verify"]));
    assert!(
        verified.contains("OK: 4 chained records verified"),
        "{verified}"
    );
}

// --- the admin API ---------------------------------------------------------

async fn admin_gateway(token: bool) -> (Gateway, fake_smartlead::FakeHandle, tempfile::TempDir) {
    let up = fake_smartlead::start(fake_smartlead::FakeConfig::with_leads(1))
        .await
        .unwrap();
    let keys_dir = tempfile::tempdir().unwrap();
    let tables = format!(
        "[bypass]\ninterval = \"0s\"\n\n{}",
        accounts_toml(keys_dir.path(), &["default", "eu"])
    );
    let admin = if token {
        format!("token = \"{TOKEN}\"\n")
    } else {
        String::new()
    };
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            admin: &admin,
            tables: &tables,
            ..Extra::default()
        },
    )
    .await;
    (gw, up, keys_dir)
}

async fn call(
    gw: &Gateway,
    method: &str,
    target: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(gw.admin_url(target));
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let body = Full::from(body.unwrap_or("").to_string());
    send(req.body(body).unwrap()).await
}

async fn with_token(gw: &Gateway, method: &str, target: &str, body: Option<&str>) -> Reply {
    call(gw, method, target, body, Some(TOKEN)).await
}

fn error_of(reply: &Reply, status: u16) -> String {
    assert_eq!(reply.status, status, "{:?}", reply.body);
    reply.json()["error"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_admin_key_api_needs_the_admin_token() {
    let (gw, _up, _keys) = admin_gateway(true).await;
    for (method, target, body) in [
        ("GET", "/v1/keys", None),
        ("POST", "/v1/keys", Some(r#"{"name":"alice"}"#)),
        ("POST", "/v1/keys/alice/revoke", None),
        ("POST", "/v1/keys/alice/rotate", None),
    ] {
        let missing = call(&gw, method, target, body, None).await;
        assert_eq!(missing.status, 401, "{method} {target}");
        let wrong = call(&gw, method, target, body, Some("admin-token-0123456788")).await;
        assert_eq!(wrong.status, 401, "{method} {target}");
    }
    let listed = with_token(&gw, "GET", "/v1/keys", None).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json(), serde_json::json!([]), "nothing was created");
}

#[tokio::test]
async fn the_admin_api_creates_lists_rotates_and_revokes_keys_and_audits_each() {
    let (mut gw, _up, _keys) = admin_gateway(true).await;
    let created = with_token(
        &gw,
        "POST",
        "/v1/keys",
        Some(r#"{"name":"alice","account":"eu","expires":"90d","rate_limit":"30/min"}"#),
    )
    .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let created = created.json();
    assert_eq!(
        field_names(&created),
        ["account", "expires_at", "key", "name", "rate_limit"]
    );
    assert!(is_gateway_key(created["key"].as_str().unwrap()));
    assert_eq!(created["account"], "eu");
    assert_eq!(created["rate_limit"], "30/min");
    assert!(about(
        created["expires_at"].as_str().unwrap(),
        Duration::from_secs(90 * 86_400)
    ));
    let bob = with_token(&gw, "POST", "/v1/keys", Some(r#"{"name":"bob"}"#)).await;
    assert_eq!(bob.status, 201);
    assert_eq!(bob.json()["account"], "default", "the default account");

    let listed = with_token(&gw, "GET", "/v1/keys", None).await;
    assert_eq!(listed.status, 200);
    assert!(!contains(&listed.body, b"sdg_"), "a key in the listing");
    let listed = listed.json();
    let rows = listed.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows
        .iter()
        .all(|k| k["state"] == "active" && k["created_by"] == "admin token"));

    let rotated = with_token(
        &gw,
        "POST",
        "/v1/keys/alice/rotate",
        Some(r#"{"grace":"1h"}"#),
    )
    .await;
    assert_eq!(rotated.status, 200, "{:?}", rotated.body);
    let rotated = rotated.json();
    assert_ne!(rotated["key"], created["key"]);
    assert!(about(
        rotated["old_valid_until"].as_str().unwrap(),
        Duration::from_secs(3600)
    ));
    // No body: the default grace of a day.
    let again = with_token(&gw, "POST", "/v1/keys/bob/rotate", None).await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert!(about(
        again.json()["old_valid_until"].as_str().unwrap(),
        Duration::from_secs(86_400)
    ));

    let revoked = with_token(&gw, "POST", "/v1/keys/alice/revoke", None).await;
    assert_eq!(revoked.status, 200);
    assert_eq!(
        revoked.json(),
        serde_json::json!({"name": "alice", "revoked": 2})
    );
    let listed = with_token(&gw, "GET", "/v1/keys", None).await.json();
    let states = |name: &str| {
        let mut s: Vec<String> = listed
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["name"] == name)
            .map(|k| k["state"].as_str().unwrap().to_string())
            .collect();
        s.sort();
        s
    };
    assert_eq!(states("alice"), ["revoked", "revoked"]);
    assert_eq!(states("bob"), ["active", "rotated"]);

    let trail = with_token(&gw, "GET", "/v1/audit", None).await;
    assert!(!contains(&trail.body, b"sdg_"), "a key in the trail");
    let trail = trail.json();
    let mut items = trail["items"].as_array().unwrap().clone();
    items.reverse();
    let seen: Vec<(String, String, String)> = items
        .iter()
        .filter(|e| e["operation"].as_str().unwrap().starts_with("key."))
        .map(|e| {
            assert_eq!(e["actor_label"], "admin token", "{e}");
            assert_eq!(e["method"], "POST", "{e}");
            (
                e["operation"].as_str().unwrap().to_string(),
                e["path"].as_str().unwrap().to_string(),
                e["account"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expect = |op: &str, path: &str, account: &str| {
        (op.to_string(), path.to_string(), account.to_string())
    };
    assert_eq!(
        seen,
        [
            expect("key.create", "/v1/keys", "eu"),
            expect("key.create", "/v1/keys", "default"),
            expect("key.rotate", "/v1/keys/alice/rotate", "eu"),
            expect("key.rotate", "/v1/keys/bob/rotate", "default"),
            expect("key.revoke", "/v1/keys/alice/revoke", "eu"),
        ]
    );

    gw.stop().await;
    let config = gw.dir.path().join("safedelete.toml");
    let verified = Command::new(BIN)
        .args(["audit", "verify", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(stdout(&verified).contains("OK: "), "{verified:?}");
}

#[tokio::test]
async fn the_admin_key_api_answers_400_404_and_409_with_the_reason() {
    let (gw, _up, _keys) = admin_gateway(false).await;
    let create = |body: &'static str| with_token(&gw, "POST", "/v1/keys", Some(body));
    assert_eq!(create(r#"{"name":"alice"}"#).await.status, 201);

    let taken = error_of(&create(r#"{"name":"alice"}"#).await, 409);
    assert!(
        taken.contains("exists already") && taken.contains("rotate"),
        "{taken}"
    );
    let unknown_field = error_of(&create(r#"{"name":"bob","expiry":"90d"}"#).await, 400);
    assert!(unknown_field.contains("expiry"), "{unknown_field}");
    let not_json = error_of(&create("name=bob").await, 400);
    assert!(not_json.contains("not valid"), "{not_json}");
    let no_name = error_of(&create(r#"{}"#).await, 400);
    assert!(no_name.contains("name"), "{no_name}");
    let bad_name = error_of(&create(r#"{"name":"bob smith"}"#).await, 400);
    assert!(bad_name.contains("not a key name"), "{bad_name}");
    let account = error_of(&create(r#"{"name":"bob","account":"us"}"#).await, 400);
    assert!(account.contains("\"default\", \"eu\""), "{account}");
    let past = error_of(
        &create(r#"{"name":"bob","expires":"2001-01-01T00:00:00Z"}"#).await,
        400,
    );
    assert!(past.contains("in the past"), "{past}");
    let rate = error_of(&create(r#"{"name":"bob","rate_limit":"many"}"#).await, 400);
    assert!(rate.contains("rate_limit"), "{rate}");

    for action in ["revoke", "rotate"] {
        let missing = with_token(&gw, "POST", &format!("/v1/keys/nobody/{action}"), None).await;
        let err = error_of(&missing, 404);
        assert!(err.contains("\"nobody\""), "{err}");
    }
    let grace = with_token(
        &gw,
        "POST",
        "/v1/keys/alice/rotate",
        Some(r#"{"grace":"forever"}"#),
    )
    .await;
    assert!(error_of(&grace, 400).contains("grace period"));
    let extra = with_token(
        &gw,
        "POST",
        "/v1/keys/alice/rotate",
        Some(r#"{"grace":"1h","why":"x"}"#),
    )
    .await;
    assert!(error_of(&extra, 400).contains("why"));

    let listed = with_token(&gw, "GET", "/v1/keys", None).await.json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "only alice: {listed}");
    assert_eq!(
        listed[0]["state"], "active",
        "no failed call changed her key"
    );
}
