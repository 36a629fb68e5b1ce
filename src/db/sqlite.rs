//! The embedded store: one SQLite file, opened with explicit pragmas (WAL,
//! `synchronous=FULL`, a busy timeout, foreign keys) on every connection of
//! the pool, created 0600 in a 0700 directory, and migrated on a connection
//! of its own.

use std::io::ErrorKind;
use std::path::Path;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::MigrateError;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::AnyConnection;
use sqlx::{ConnectOptions, Connection, Executor};

use super::{access, schema, DbError, Location, Pool, PoolSettings, BUSY_TIMEOUT};

pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Which pragmas a connection starts with.
#[derive(Clone, Copy)]
enum Mode {
    /// The gateway's and the writing commands' connections.
    Write,
    /// The migration's own connection: foreign keys off (see [`migrate`]).
    Migrate,
    /// `open_read_only`: no write, so no journal mode to set.
    Read,
}

fn any_options(path: &Path, create: bool, read_only: bool, immutable: bool) -> AnyConnectOptions {
    sqlx::any::install_default_drivers();
    let url = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(create)
        .read_only(read_only)
        .immutable(immutable)
        .to_url_lossy();
    AnyConnectOptions::from_url(&url).expect("sqlx builds a SQLite URL it can parse")
}

impl Mode {
    fn pragmas(self) -> &'static [&'static str] {
        match self {
            Mode::Write => &[
                "PRAGMA journal_mode = WAL",
                "PRAGMA synchronous = FULL",
                "PRAGMA foreign_keys = ON",
            ],
            Mode::Migrate => &[
                "PRAGMA journal_mode = WAL",
                "PRAGMA synchronous = FULL",
                "PRAGMA foreign_keys = OFF",
            ],
            Mode::Read => &["PRAGMA foreign_keys = ON"],
        }
    }
}

async fn set_pragmas(conn: &mut AnyConnection, mode: Mode) -> Result<(), sqlx::Error> {
    conn.execute(format!("PRAGMA busy_timeout = {}", BUSY_TIMEOUT.as_millis()).as_str())
        .await?;
    for pragma in mode.pragmas() {
        conn.execute(*pragma).await?;
    }
    Ok(())
}

/// A pool whose every connection starts with `mode`'s pragmas. One
/// connection is made and set up first, on its own: a pool retries a
/// connection whose setup failed until it times out, and would hide why.
async fn connect(
    options: AnyConnectOptions,
    mode: Mode,
    max: u32,
    settings: &PoolSettings,
) -> Result<Pool, sqlx::Error> {
    let mut first = AnyConnection::connect_with(&options).await?;
    let set = set_pragmas(&mut first, mode).await;
    let _ = first.close().await;
    set?;
    AnyPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(settings.acquire_timeout)
        .after_connect(move |conn, _| Box::pin(set_pragmas(conn, mode)))
        .connect_with(options)
        .await
}

fn location(path: &Path) -> Location {
    Location::Sqlite(path.to_path_buf())
}

/// Opens (creating it 0600 and its directory 0700 if needed) and migrates
/// the database the gateway writes to; warns when an existing database is
/// readable by other users.
pub(super) async fn open(path: &Path, settings: &PoolSettings) -> Result<Pool, DbError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        access::create_private_dir(dir).map_err(|source| DbError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    match access::create_private_file(path) {
        // SQLite, refused the same way, then says by whom.
        Err(err) if err.kind() == ErrorKind::PermissionDenied => {}
        Err(source) => {
            return Err(DbError::CreateFile {
                path: path.to_path_buf(),
                source,
            })
        }
        Ok(()) => warn_if_exposed(path),
    }
    open_migrated(path, true, settings).await
}

fn warn_if_exposed(path: &Path) {
    if let Some(mode) = access::exposed_mode(path) {
        let path = path.display();
        tracing::warn!(
            path = %path,
            mode = %format_args!("{mode:04o}"),
            "the database {path} has mode {mode:04o}: other users can read it, and its \
             snapshots hold every lead's personal data; fix it with `chmod 600 {path}`"
        );
    }
}

pub(super) async fn open_existing(path: &Path, settings: &PoolSettings) -> Result<Pool, DbError> {
    require_file(path)?;
    open_migrated(path, false, settings).await
}

/// A read-only copy (in a directory this user may not write, with no `-wal`
/// or `-shm` beside it) is opened as immutable: SQLite needs a `-shm` to read
/// a WAL database and cannot create one there. That is only safe while
/// nobody writes the file, which holds here: a gateway keeps a `-wal` beside
/// the database for as long as it has it open.
pub(super) async fn open_read_only(path: &Path) -> Result<(Pool, Vec<(i64, bool)>), DbError> {
    require_file(path)?;
    match read(path, false).await {
        Ok(read) => Ok(read),
        Err(err) if is_access_error(&err) && !has_wal_files(path) => read(path, true)
            .await
            .map_err(|source| open_error(path, source, false)),
        Err(source) => Err(open_error(path, source, false)),
    }
}

/// A read-only pool and the migrations the database records (its first read).
async fn read(path: &Path, immutable: bool) -> Result<(Pool, Vec<(i64, bool)>), sqlx::Error> {
    let pool = connect(
        any_options(path, false, true, immutable),
        Mode::Read,
        4,
        &PoolSettings::default(),
    )
    .await?;
    match schema::applied(&pool).await {
        Ok(applied) => Ok((pool, applied)),
        Err(err) => {
            pool.close().await;
            Err(err)
        }
    }
}

fn has_wal_files(path: &Path) -> bool {
    ["-wal", "-shm"]
        .iter()
        .any(|suffix| access::sibling(path, suffix).exists())
}

/// A missing file is [`DbError::Missing`]; anything else (a file this user
/// may not see, say) is left for SQLite to report, explained.
fn require_file(path: &Path) -> Result<(), DbError> {
    let missing = || DbError::Missing {
        path: path.to_path_buf(),
    };
    match std::fs::metadata(path) {
        Err(err) if err.kind() == ErrorKind::NotFound => Err(missing()),
        Ok(meta) if !meta.is_file() => Err(missing()),
        _ => Ok(()),
    }
}

async fn open_migrated(
    path: &Path,
    create: bool,
    settings: &PoolSettings,
) -> Result<Pool, DbError> {
    migrate(path, create).await?;
    // SQLite has one writer at a time: a few connections serve every reader.
    connect(
        any_options(path, false, false, false),
        Mode::Write,
        settings.max_connections.min(4),
        settings,
    )
    .await
    .map_err(|source| open_error(path, source, true))
}

/// Applies the embedded migrations on a connection of its own with foreign
/// keys off: a migration that rebuilds a table (SQLite's way to change a
/// column) must drop the old one while other tables still reference it.
/// SQLite can only switch foreign keys outside a transaction, and each
/// migration runs in one, hence the connection. Afterwards every reference
/// is checked: a migration that broke one is refused.
async fn migrate(path: &Path, create: bool) -> Result<(), DbError> {
    let conn = migration_pool(path, create)
        .await
        .map_err(|source| open_error(path, source, true))?;
    let migrated = super::run_migrations(&MIGRATOR, &conn, &location(path)).await;
    let broken: Result<Vec<(String,)>, _> = match &migrated {
        Ok(()) => {
            sqlx::query_as("SELECT \"table\" FROM pragma_foreign_key_check")
                .fetch_all(&conn)
                .await
        }
        Err(_) => Ok(Vec::new()),
    };
    conn.close().await;
    match (migrated, broken) {
        (Ok(()), Ok(broken)) if broken.is_empty() => Ok(()),
        (Ok(()), Ok(broken)) => Err(DbError::Migrate {
            store: location(path),
            source: MigrateError::Execute(sqlx::Error::Protocol(format!(
                "the migrated database has {} broken reference(s), first in table {}",
                broken.len(),
                broken[0].0
            ))),
        }),
        (Ok(()), Err(source)) => Err(open_error(path, source, true)),
        (Err(DbError::Migrate { source, .. }), _) => Err(match source {
            // Migrating is the first write: a read-only file fails here.
            MigrateError::Execute(source) if is_access_error(&source) => {
                open_error(path, source, true)
            }
            source => DbError::Migrate {
                store: location(path),
                source,
            },
        }),
        (Err(err), _) => Err(err),
    }
}

/// The migrations' connection (a pool of one: the migrator's futures over
/// a bare connection are not `Send` for every lifetime, which a spawned
/// gateway needs).
pub(super) async fn migration_pool(path: &Path, create: bool) -> Result<Pool, sqlx::Error> {
    connect(
        any_options(path, create, false, false),
        Mode::Migrate,
        1,
        &PoolSettings::default(),
    )
    .await
}

/// [`DbError::Denied`] naming the file in the way when SQLite failed for
/// lack of permission, else [`DbError::Open`].
fn open_error(path: &Path, source: sqlx::Error, write: bool) -> DbError {
    let blocked = is_access_error(&source)
        .then(|| access::find_blocked(path, write))
        .flatten()
        .map(Box::new);
    match blocked {
        Some(blocked) => DbError::Denied {
            path: path.to_path_buf(),
            blocked,
            source,
        },
        None => DbError::Open {
            store: location(path),
            source,
        },
    }
}

/// SQLite's "cannot open" (14), "read-only" (8) and "permission" (3) codes,
/// extended codes included, or an I/O permission error.
fn is_access_error(err: &sqlx::Error) -> bool {
    const SQLITE_PERM: i32 = 3;
    const SQLITE_READONLY: i32 = 8;
    const SQLITE_CANTOPEN: i32 = 14;
    match err {
        sqlx::Error::Io(io) => io.kind() == ErrorKind::PermissionDenied,
        sqlx::Error::Database(db) => {
            let primary = db
                .code()
                .and_then(|c| c.parse::<i32>().ok())
                .map(|c| c & 0xff);
            matches!(
                primary,
                Some(SQLITE_PERM | SQLITE_READONLY | SQLITE_CANTOPEN)
            )
        }
        _ => false,
    }
}
