//! Files only the gateway's user can read: the database, its `-wal` and
//! `-shm`, exports and the directories created for them are private; `serve`
//! warns about a database others can read; the read-only commands work on a
//! read-only copy run by another user; a permission failure names the path
//! and its owner.
//!
//! The tests run as root in CI, and root ignores file modes, so the commands
//! that must meet a permission are run as `nobody` (through `setpriv`) when
//! the test runs as root, and directly otherwise.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::process::{stderr, stdout};
use common::*;
use fake_smartlead::FakeHandle;
use http::Request;
use http_body_util::Full;

const BIN: &str = env!("CARGO_BIN_EXE_safedelete");

/// `nobody`: a user that owns nothing the tests create.
const NOBODY: u32 = 65534;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The effective uid of this process (`/proc/self` belongs to it).
fn my_uid() -> u32 {
    std::fs::metadata("/proc/self").unwrap().uid()
}

fn running_as_root() -> bool {
    my_uid() == 0
}

fn sibling(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// `safedelete ARGS --config CONFIG`, as this user.
fn run(args: &[&str], config: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

/// `safedelete ARGS --config CONFIG` as another user: `nobody` when the test
/// runs as root, this (unprivileged) user otherwise. `dir` must be readable
/// by that user; the binary is copied there when `nobody` cannot reach it.
fn run_unprivileged(args: &[&str], config: &Path, dir: &Path) -> Output {
    let mut command = if running_as_root() {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={NOBODY}"))
            .arg(format!("--regid={NOBODY}"))
            .arg("--clear-groups")
            .arg(reachable_binary(dir));
        c
    } else {
        Command::new(BIN)
    };
    command
        .args(args)
        .arg("--config")
        .arg(config)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// The binary itself when every directory above it lets others through,
/// else a copy in `dir`.
fn reachable_binary(dir: &Path) -> PathBuf {
    let bin = Path::new(BIN);
    let open = bin.ancestors().skip(1).all(|d| mode(d) & 0o001 != 0);
    if open {
        return bin.to_path_buf();
    }
    let copy = dir.join("safedelete");
    if !copy.exists() {
        std::fs::copy(bin, &copy).unwrap();
        set_mode(&copy, 0o755);
    }
    copy
}

/// A gateway (default policy `archive`) that archived campaign 101, so the
/// database holds a snapshot; stopped, so the database is closed.
struct Archived {
    gw: Gateway,
    fake: FakeHandle,
    snapshot_id: i64,
}

impl Archived {
    async fn build() -> Archived {
        let fake = fake_smartlead::start(fake_smartlead::FakeConfig::default())
            .await
            .unwrap();
        let mut gw = Gateway::start(&fake.url()).await;
        let reply = send(
            Request::delete(gw.url(&format!("/api/v1/campaigns/101?api_key={KEY}")))
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await;
        assert_eq!(reply.header("x-safedelete-action"), Some("archived"));
        let snapshot_id = reply
            .header("x-safedelete-snapshot-id")
            .expect("an archive takes a snapshot")
            .parse()
            .unwrap();
        gw.stop().await;
        Archived {
            gw,
            fake,
            snapshot_id,
        }
    }

    fn config(&self) -> PathBuf {
        self.gw.dir.path().join("safedelete.toml")
    }
}

/// A tempdir others may enter, holding a copy of `db` (0444, directory 0555)
/// and a config naming it; the copy has no `-wal` or `-shm` beside it.
struct ReadOnlyCopy {
    dir: tempfile::TempDir,
    db: PathBuf,
    config: PathBuf,
}

impl ReadOnlyCopy {
    fn of(db: &Path) -> ReadOnlyCopy {
        assert!(
            !sibling(db, "-wal").exists(),
            "a stopped gateway leaves no -wal"
        );
        let dir = tempfile::tempdir().unwrap();
        set_mode(dir.path(), 0o755);
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        let copy = ro.join("safedelete.db");
        std::fs::copy(db, &copy).unwrap();
        set_mode(&copy, 0o444);
        set_mode(&ro, 0o555);
        let config = dir.path().join("ro.toml");
        std::fs::write(
            &config,
            config_text("http://127.0.0.1:9", &copy, Extra::default()),
        )
        .unwrap();
        set_mode(&config, 0o644);
        ReadOnlyCopy {
            dir,
            db: copy,
            config,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        run_unprivileged(args, &self.config, self.dir.path())
    }
}

#[tokio::test]
async fn the_gateways_database_wal_and_shm_are_0600_and_its_directory_0700() {
    let fake = fake_smartlead::start(fake_smartlead::FakeConfig::default())
        .await
        .unwrap();
    let mut gw = Gateway::start(&fake.url()).await;
    let reply = get(&gw.url(&format!("/api/v1/campaigns?api_key={KEY}"))).await;
    assert_eq!(reply.status, 200);
    gw.wait_for_audit_rows(1).await;
    // While the gateway runs, WAL mode keeps all three files.
    let db = gw.db_path.clone();
    for path in [db.clone(), sibling(&db, "-wal"), sibling(&db, "-shm")] {
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    assert_eq!(mode(db.parent().unwrap()), 0o700);
    gw.stop().await;
}

#[tokio::test]
async fn snapshot_and_audit_exports_are_0600_in_directories_created_0700() {
    let a = Archived::build().await;
    let out = a.gw.dir.path();
    let id = a.snapshot_id.to_string();
    let leads = out.join("leads.csv");
    // A `.partial` left behind by a crash, readable by all: not inherited.
    let stale = out.join("leads.csv.partial");
    std::fs::write(&stale, b"stale").unwrap();
    set_mode(&stale, 0o644);
    stdout(&run(
        &["snapshots", "export", &id, "-o", leads.to_str().unwrap()],
        &a.config(),
    ));
    assert_eq!(
        std::fs::read(&leads).unwrap(),
        a.fake.expected_leads_csv(101)
    );
    assert_eq!(mode(&leads), 0o600);

    let campaign = out.join("campaign.json");
    stdout(&run(
        &[
            "snapshots",
            "export",
            &id,
            "--part",
            "campaign",
            "-o",
            campaign.to_str().unwrap(),
        ],
        &a.config(),
    ));
    assert_eq!(mode(&campaign), 0o600);

    let parts = out.join("exports").join("101");
    let listing = stdout(&run(
        &[
            "snapshots",
            "export",
            &id,
            "-o",
            &format!("{}/", parts.display()),
        ],
        &a.config(),
    ));
    assert_eq!(mode(&parts), 0o700);
    assert_eq!(mode(parts.parent().unwrap()), 0o700);
    let files: Vec<_> = std::fs::read_dir(&parts).unwrap().collect();
    assert_eq!(files.len(), 6, "{listing}");
    for file in files {
        let path = file.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }

    let trail = out.join("audit.jsonl");
    stdout(&run(
        &["audit", "export", "-o", trail.to_str().unwrap()],
        &a.config(),
    ));
    assert_eq!(mode(&trail), 0o600);
}

#[tokio::test]
async fn serve_warns_at_start_when_others_can_read_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data").join("safedelete.db");
    safedelete::db::open(&db).await.unwrap().close().await;
    set_mode(&db, 0o644);
    let config = dir.path().join("safedelete.toml");
    std::fs::write(
        &config,
        config_text("http://127.0.0.1:9", &db, Extra::default()),
    )
    .unwrap();

    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env("SAFEDELETE_LOG_FORMAT", "json")
        .env("SAFEDELETE_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let listening = line.contains("safedelete listening");
            let _ = tx.send(line);
            if listening {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) {
        let listening = line.contains("safedelete listening");
        lines.push(line);
        if listening {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();

    let path = db.display().to_string();
    let warning = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["level"] == "WARN" && v["path"] == path.as_str())
        .unwrap_or_else(|| panic!("no warning naming {path} in:\n{}", lines.join("\n")));
    assert_eq!(warning["mode"], "0644");
    let message = warning["message"].as_str().unwrap();
    assert!(message.contains("0644"), "{message}");
    assert!(message.contains(&format!("chmod 600 {path}")), "{message}");
    assert!(
        lines.iter().any(|l| l.contains("safedelete listening")),
        "the warning does not stop the gateway:\n{}",
        lines.join("\n")
    );
}

#[tokio::test]
async fn read_only_commands_work_on_a_read_only_copy_run_by_another_user() {
    let a = Archived::build().await;
    let copy = ReadOnlyCopy::of(&a.gw.db_path);
    let before = std::fs::read(&copy.db).unwrap();
    let id = a.snapshot_id.to_string();

    let audit = stdout(&copy.run(&["audit"]));
    assert!(audit.contains("DELETE"), "{audit}");
    let history = stdout(&copy.run(&["history", "--campaign", "101"]));
    assert!(
        history.contains("campaign 101: 1 guarded operation"),
        "{history}"
    );
    let list = stdout(&copy.run(&["snapshots", "list"]));
    assert!(list.contains("complete"), "{list}");
    let show = stdout(&copy.run(&["snapshots", "show", &id]));
    assert!(show.contains("leads_csv"), "{show}");
    let export = copy.run(&["snapshots", "export", &id]);
    assert!(export.status.success(), "{}", stderr(&export));
    assert_eq!(export.stdout, a.fake.expected_leads_csv(101));
    let verify = stdout(&copy.run(&["snapshots", "verify"]));
    assert!(verify.contains(": OK ("), "{verify}");
    assert!(!verify.contains("FAILED"), "{verify}");
    let chain = stdout(&copy.run(&["audit", "verify"]));
    assert!(chain.starts_with("OK: "), "{chain}");

    assert_eq!(
        std::fs::read(&copy.db).unwrap(),
        before,
        "the copy is unchanged"
    );
    for suffix in ["-wal", "-shm", "-journal"] {
        assert!(!sibling(&copy.db, suffix).exists(), "{suffix} appeared");
    }
}

#[tokio::test]
async fn a_write_command_on_a_read_only_copy_names_the_file_and_its_owner() {
    let a = Archived::build().await;
    let copy = ReadOnlyCopy::of(&a.gw.db_path);
    let out = copy.run(&["snapshots", "pin", &a.snapshot_id.to_string()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    let owner = std::fs::metadata(&copy.db).unwrap().uid();
    assert!(
        err.contains(&format!("permission denied on {}", copy.db.display())),
        "{err}"
    );
    assert!(err.contains(&format!("uid {owner}")), "{err}");
    assert!(err.contains("mode 0444"), "{err}");
}

#[tokio::test]
async fn a_permission_error_names_the_database_path_and_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    set_mode(dir.path(), 0o755);
    let db = dir.path().join("data").join("safedelete.db");
    safedelete::db::open(&db).await.unwrap().close().await;
    set_mode(db.parent().unwrap(), 0o755);
    // Root's private file keeps `nobody` out; without root, a file with no
    // permissions at all keeps out even its owner.
    let private = if running_as_root() { 0o600 } else { 0o000 };
    set_mode(&db, private);
    let config = dir.path().join("safedelete.toml");
    std::fs::write(
        &config,
        config_text("http://127.0.0.1:9", &db, Extra::default()),
    )
    .unwrap();
    set_mode(&config, 0o644);

    let out = run_unprivileged(&["snapshots", "list"], &config, dir.path());
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("permission denied on {}", db.display())),
        "{err}"
    );
    let uid = my_uid();
    assert!(err.contains(&format!("uid {uid}")), "{err}");
    assert!(err.contains(&format!("mode {private:04o}")), "{err}");
    if uid == 0 {
        assert!(err.contains("owned by root (uid 0)"), "{err}");
        assert!(err.contains("run safedelete as root"), "{err}");
    }
    assert!(err.contains("chown"), "{err}");
}

#[tokio::test]
async fn a_read_only_command_refuses_a_schema_this_binary_does_not_know() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("safedelete.db");
    let pool = safedelete::db::open(&db).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99990101000000, 'from the future', 1, X'00', 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let config = dir.path().join("safedelete.toml");
    std::fs::write(
        &config,
        config_text("http://127.0.0.1:9", &db, Extra::default()),
    )
    .unwrap();
    let newer = run(&["audit"], &config);
    assert!(!newer.status.success());
    assert!(
        stderr(&newer).contains("a newer safedelete migrated it"),
        "{}",
        stderr(&newer)
    );

    let pool = safedelete::db::open_existing(&db).await;
    assert!(pool.is_err(), "the gateway refuses it too");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version >= 6")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let older = run(&["snapshots", "list"], &config);
    assert!(!older.status.success());
    let err = stderr(&older);
    assert!(err.contains("older than this binary"), "{err}");
    assert!(err.contains("run `safedelete serve`"), "{err}");
}
