//! Who may read the database files. Snapshots hold every lead's personal
//! data, so the gateway creates its data directory 0700 and the database
//! 0600 before SQLite touches it (SQLite's unix VFS then gives `-wal` and
//! `-shm` the database file's mode), and warns when an existing database is
//! readable by others. When SQLite cannot open the database for lack of
//! permission, [`find_blocked`] names the path in the way, its owner and mode.

use std::fmt;
use std::fs::{DirBuilder, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Mode of the database file (and so of its `-wal` and `-shm`).
pub const FILE_MODE: u32 = 0o600;
/// Mode of directories created for the database or for exports.
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` and its missing parents 0700; directories that already
/// exist keep their mode (they may be shared on purpose).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Creates an empty database file 0600 unless one exists, so SQLite never
/// creates it with the umask's usual 0644. SQLite treats an empty file as an
/// empty database.
pub fn create_private_file(path: &Path) -> io::Result<()> {
    let created = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path);
    match created {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(err),
    }
}

/// The permission bits of `path` when its group or other users may access
/// it; `None` when only its owner may (or it cannot be read at all).
pub fn exposed_mode(path: &Path) -> Option<u32> {
    let mode = std::fs::metadata(path).ok()?.mode() & 0o7777;
    (mode & 0o077 != 0).then_some(mode)
}

/// The user owning a file: always the uid, and the name when `/etc/passwd`
/// has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub name: Option<String>,
}

impl Owner {
    fn of(uid: u32) -> Owner {
        let name = std::fs::read_to_string("/etc/passwd")
            .ok()
            .and_then(|passwd| name_in_passwd(&passwd, uid));
        Owner { uid, name }
    }
}

impl Owner {
    /// What to pass to `sudo -u`: the name, else `#UID`.
    pub fn login(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => format!("#{}", self.uid),
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name} (uid {})", self.uid),
            None => write!(f, "uid {}", self.uid),
        }
    }
}

/// The login name of `uid` in passwd-format text (`name:x:uid:gid:...`).
fn name_in_passwd(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let line_uid = fields.nth(1)?.parse::<u32>().ok()?;
        (line_uid == uid && !name.is_empty()).then(|| name.to_string())
    })
}

/// A file or directory that keeps this process from using the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub path: PathBuf,
    pub owner: Owner,
    pub mode: u32,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}, owned by {} with mode {:04o}",
            self.path.display(),
            self.owner,
            self.mode
        )
    }
}

/// Why SQLite could not open `db`, looked for on the file system: the first
/// of the database file, its `-wal` and its `-shm` that this process may not
/// open (for writing too when `write`), or, when it cannot even see the
/// file, the nearest directory above it that it can. When none is refused
/// but a `-wal` or `-shm` is missing, the database's directory, where SQLite
/// must create them. `None` when nothing points at a permission (a
/// read-only file system, say).
pub fn find_blocked(db: &Path, write: bool) -> Option<Blocked> {
    let mut missing = false;
    for candidate in [db.to_path_buf(), sibling(db, "-wal"), sibling(db, "-shm")] {
        let opened = OpenOptions::new().read(true).write(write).open(&candidate);
        match opened.map_err(|err| err.kind()) {
            Err(ErrorKind::PermissionDenied) => return inspect(&candidate),
            Err(ErrorKind::ReadOnlyFilesystem) => return None,
            Err(ErrorKind::NotFound) => missing = true,
            _ => {}
        }
    }
    let dir = db.parent().filter(|d| !d.as_os_str().is_empty())?;
    missing.then(|| inspect(dir)).flatten()
}

/// `path`'s owner and mode, or those of the nearest ancestor whose metadata
/// is visible (a directory without search permission hides what is inside).
fn inspect(path: &Path) -> Option<Blocked> {
    path.ancestors()
        .filter(|p| !p.as_os_str().is_empty())
        .find_map(|p| {
            let meta = std::fs::metadata(p).ok()?;
            Some(Blocked {
                path: p.to_path_buf(),
                owner: Owner::of(meta.uid()),
                mode: meta.mode() & 0o7777,
            })
        })
}

/// `db` with `suffix` appended to its file name (`safedelete.db-wal`).
pub fn sibling(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uid_is_named_from_passwd_lines() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      # a comment\n\
                      broken\n\
                      safedelete:x:998:998::/var/lib/safedelete:/usr/sbin/nologin\n";
        assert_eq!(name_in_passwd(passwd, 0).as_deref(), Some("root"));
        assert_eq!(name_in_passwd(passwd, 998).as_deref(), Some("safedelete"));
        assert_eq!(name_in_passwd(passwd, 1000), None);
    }

    #[test]
    fn an_owner_without_a_name_is_shown_by_uid() {
        let named = Owner {
            uid: 998,
            name: Some("safedelete".into()),
        };
        assert_eq!(named.to_string(), "safedelete (uid 998)");
        assert_eq!(named.login(), "safedelete");
        let unnamed = Owner {
            uid: 4242,
            name: None,
        };
        assert_eq!(unnamed.to_string(), "uid 4242");
        assert_eq!(unnamed.login(), "#4242");
    }

    #[test]
    fn created_directories_and_database_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a").join("b");
        create_private_dir(&dir).unwrap();
        let db = dir.join("x.db");
        create_private_file(&db).unwrap();
        // A second call leaves the existing file alone.
        std::fs::write(&db, b"kept").unwrap();
        create_private_file(&db).unwrap();
        assert_eq!(std::fs::read(&db).unwrap(), b"kept");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&db), 0o600);
        assert_eq!(exposed_mode(&db), None);
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(exposed_mode(&db), Some(0o644));
    }

    #[test]
    fn with_every_file_usable_but_the_wal_missing_the_directory_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("x.db");
        std::fs::write(&db, b"").unwrap();
        let blocked = find_blocked(&db, true).unwrap();
        assert_eq!(blocked.path, tmp.path());
        std::fs::write(sibling(&db, "-wal"), b"").unwrap();
        std::fs::write(sibling(&db, "-shm"), b"").unwrap();
        assert_eq!(find_blocked(&db, true), None);
    }
}
