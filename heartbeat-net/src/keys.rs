//! Key files, read and checked the way ssh checks private keys: the server's `--auth-keys`
//! table, a client's `--auth-key-file` secret, and the server's `--tls-key`.
//!
//! A key file is refused when anyone but its owner can write to it (group- or world-writable),
//! or when its owner is neither the user running the binary nor root: whoever can change it
//! can let themselves in. It is accepted with a warning when every user can read it. Errors
//! name the file, and the line for a syntax error, but never show a secret.
//!
//! The server's `--state-dir` is checked by the same rules (`check_private_dir`): whoever can
//! write in it can replace its files with links to others.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use heartbeat_core::auth::{AuthKeys, Secret};
use heartbeat_core::{ClientId, ConfigError};
use thiserror::Error;

/// The most bytes a key file may have: far more than any real one, and reading stops there.
const MAX_KEY_FILE: u64 = 4 << 20;

/// A key file that cannot be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// It could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Its ownership or mode lets someone else change it, or it is not a regular file.
    #[error("refusing {path}: {why}")]
    Unsafe {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        why: String,
    },
    /// A line is not what the format says.
    #[error("{path}:{line}: {why}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong (never the secret itself).
        why: String,
    },
    /// It holds no key at all.
    #[error("{path}: no key in the file")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// What was read from a key file, and what is worth a warning about it.
#[derive(Debug)]
pub struct Loaded<T> {
    /// The keys or the secret.
    pub value: T,
    /// For the log, e.g. that every user can read the file.
    pub warnings: Vec<String>,
}

/// Reads a server's `--auth-keys` file: `<client-id> <secret>` per line, at most one
/// `* <secret>` line (the fleet-wide secret), `#` comment lines and blank lines.
pub fn load_auth_keys(path: &Path) -> Result<Loaded<AuthKeys>, KeyFileError> {
    let (text, warnings) = read_checked(path)?;
    let value = parse_auth_keys(&text).map_err(|(line, why)| KeyFileError::Syntax {
        path: path.to_owned(),
        line,
        why,
    })?;
    if value.is_empty() {
        return Err(KeyFileError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(Loaded { value, warnings })
}

/// Reads a client's `--auth-key-file`: its secret, alone on one line (`#` comment lines and
/// blank lines aside).
pub fn load_client_key(path: &Path) -> Result<Loaded<Secret>, KeyFileError> {
    let (text, warnings) = read_checked(path)?;
    let syntax = |line, why: String| KeyFileError::Syntax {
        path: path.to_owned(),
        line,
        why,
    };
    let mut secret = None;
    for (n, line) in meaningful_lines(&text) {
        if secret.is_some() {
            return Err(syntax(
                n,
                "a client key file holds one secret, on one line".into(),
            ));
        }
        secret = Some(parse_secret(line).map_err(|why| syntax(n, why))?);
    }
    match secret {
        Some(value) => Ok(Loaded { value, warnings }),
        None => Err(KeyFileError::Empty {
            path: path.to_owned(),
        }),
    }
}

/// Checks a private key file that something else will read (the server's `--tls-key`): the
/// same ownership and mode rules. Returns the warnings.
pub fn check_private_file(path: &Path) -> Result<Vec<String>, KeyFileError> {
    let meta = fs::metadata(path).map_err(|source| KeyFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    check_permissions(path, &FileFacts::of(&meta), Kind::File)
}

/// Checks a private directory (the server's `--state-dir`) by the rules of a key file: refused
/// when anyone but its owner can write in it, or when its owner is neither the user running
/// this nor root. `meta` is the directory's, read from a handle to it (not from its path, which
/// could name something else by now).
pub fn check_private_dir(path: &Path, meta: &fs::Metadata) -> Result<(), KeyFileError> {
    check_permissions(path, &FileFacts::of(meta), Kind::Directory).map(drop)
}

/// Parses the text of an `--auth-keys` file. The error is the line number (from 1) and what is
/// wrong with it.
pub fn parse_auth_keys(text: &str) -> Result<AuthKeys, (usize, String)> {
    let mut keys = AuthKeys::new();
    for (n, line) in meaningful_lines(text) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [id, secret] = fields[..] else {
            return Err((
                n,
                format!(
                    "expected `<client-id> <secret>` or `* <secret>`, got {} field(s)",
                    fields.len()
                ),
            ));
        };
        let secret = parse_secret(secret).map_err(|why| (n, why))?;
        if id == "*" {
            if keys.set_fleet(secret).is_some() {
                return Err((n, "a second `*` line: one fleet-wide secret at most".into()));
            }
            continue;
        }
        let client = ClientId::new(id).map_err(|e| (n, format!("client id {id:?}: {e}")))?;
        if keys.insert(client, secret).is_some() {
            return Err((n, format!("client id {id} is listed twice")));
        }
    }
    Ok(keys)
}

/// The lines that say something, numbered from 1: not blank, not a `#` comment.
fn meaningful_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    (1..).zip(text.lines()).filter_map(|(n, line)| {
        let line = line.trim();
        (!line.is_empty() && !line.starts_with('#')).then_some((n, line))
    })
}

fn parse_secret(s: &str) -> Result<Secret, String> {
    Secret::new(s).map_err(|e: ConfigError| format!("the secret is not valid: {e}"))
}

/// Reads a key file after checking who may change it; returns its text and the warnings.
fn read_checked(path: &Path) -> Result<(String, Vec<String>), KeyFileError> {
    let read = |source| KeyFileError::Read {
        path: path.to_owned(),
        source,
    };
    let file = fs::File::open(path).map_err(read)?;
    // The checks look at the file that was opened, not at whatever the path names by now.
    let meta = file.metadata().map_err(read)?;
    let warnings = check_permissions(path, &FileFacts::of(&meta), Kind::File)?;
    let mut text = String::new();
    io::Read::read_to_string(&mut io::Read::take(file, MAX_KEY_FILE), &mut text).map_err(read)?;
    Ok((text, warnings))
}

/// What a checked path must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A key file: a regular file, mode 600 at most.
    File,
    /// The state directory: a directory, mode 700 at most.
    Directory,
}

/// What the ssh rules look at: the file's kind, mode and owner, and who is reading it.
#[derive(Clone, Copy, Debug)]
struct FileFacts {
    /// What the path is; `None` for anything else (a fifo, a socket, a device).
    kind: Option<Kind>,
    mode: u32,
    owner: u32,
    euid: u32,
}

impl FileFacts {
    fn of(meta: &fs::Metadata) -> Self {
        let kind = if meta.is_file() {
            Some(Kind::File)
        } else if meta.is_dir() {
            Some(Kind::Directory)
        } else {
            None
        };
        Self {
            kind,
            mode: meta.permissions().mode() & 0o7777,
            owner: meta.uid(),
            euid: rustix::process::geteuid().as_raw(),
        }
    }
}

/// The ssh rules: refuse a path that is not what it must be, that anyone but its owner can
/// write, or owned by someone other than the user reading it or root; warn about a file
/// everyone can read (a directory everyone can list is fine: its files are private).
fn check_permissions(path: &Path, f: &FileFacts, want: Kind) -> Result<Vec<String>, KeyFileError> {
    let refuse = |why: String| {
        Err(KeyFileError::Unsafe {
            path: path.to_owned(),
            why,
        })
    };
    let (private, what) = match want {
        Kind::File => ("600", "a regular file"),
        Kind::Directory => ("700", "a directory"),
    };
    if f.kind != Some(want) {
        return refuse(format!("not {what}"));
    }
    let (mode, shown) = (f.mode, path.display());
    if mode & 0o022 != 0 {
        return refuse(format!(
            "it is writable by {} (mode {mode:04o}); run `chmod go-w {shown}` (or `chmod \
             {private}`)",
            if mode & 0o002 != 0 {
                "every user"
            } else {
                "its group"
            },
        ));
    }
    if f.owner != f.euid && f.owner != 0 {
        return refuse(format!(
            "it is owned by uid {}, neither the user running this (uid {}) nor root; run \
             `chown {} {shown}` (or use one of your own)",
            f.owner, f.euid, f.euid
        ));
    }
    let mut warnings = Vec::new();
    if mode & 0o004 != 0 && want == Kind::File {
        warnings.push(format!(
            "{shown} is readable by every user on this machine (mode {mode:04o}): anyone who \
             reads it can authenticate with it; run `chmod o-r {shown}` (or `chmod 600`)"
        ));
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    const GOOD: &str = "0123456789abcdef-secret";

    fn id(s: &str) -> ClientId {
        ClientId::new(s).unwrap()
    }

    /// A file with `text` and `mode` in a fresh temporary directory.
    fn file(text: &str, mode: u32) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        let mut f = fs::File::create(&path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        (dir, path)
    }

    #[test]
    fn a_keys_file_with_comments_blank_lines_and_a_fleet_secret() {
        let text = format!("# fleet\n\n  web-01 {GOOD}-1  \n* {GOOD}-fleet\nweb-02\t{GOOD}-2\n");
        let keys = parse_auth_keys(&text).unwrap();
        assert_eq!(keys.len(), 2);
        assert!(keys.has_fleet());
        let s = |t: &str| Secret::new(t).unwrap();
        assert_eq!(
            keys.secret_for(&id("web-01")),
            Some(&s(&format!("{GOOD}-1")))
        );
        assert_eq!(
            keys.secret_for(&id("other")),
            Some(&s(&format!("{GOOD}-fleet")))
        );
    }

    #[test]
    fn malformed_lines_are_named_and_secrets_never_shown() {
        let cases = [
            (format!("a {GOOD}\nb\n"), 2, "got 1 field(s)"),
            (format!("a {GOOD} extra\n"), 1, "got 3 field(s)"),
            ("# c\na short\n".to_owned(), 2, "the secret is not valid"),
            (format!("bad/id! {GOOD}\n"), 1, "client id \"bad/id!\""),
            (format!("a {GOOD}\na {GOOD}x\n"), 2, "listed twice"),
            (format!("* {GOOD}\n* {GOOD}x\n"), 2, "a second `*` line"),
        ];
        for (text, line, why) in cases {
            let (n, got) = parse_auth_keys(&text).unwrap_err();
            assert_eq!(n, line, "{text:?}");
            assert!(got.contains(why), "{got:?} for {text:?}");
            assert!(!got.contains(GOOD) && !got.contains("short"), "{got}");
        }
        let (_dir, path) = file(&format!("a {GOOD}\nb\n"), 0o600);
        let e = load_auth_keys(&path).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}:2: expected `<client-id> <secret>` or `* <secret>`, got 1 field(s)",
                path.display()
            )
        );
        let (_dir, path) = file("# nothing\n\n", 0o600);
        assert!(matches!(
            load_auth_keys(&path),
            Err(KeyFileError::Empty { .. })
        ));
    }

    #[test]
    fn a_client_key_file_holds_one_secret() {
        let (_dir, path) = file(&format!("# mine\n{GOOD}\n"), 0o600);
        let loaded = load_client_key(&path).unwrap();
        assert_eq!(loaded.value, Secret::new(GOOD).unwrap());
        assert!(loaded.warnings.is_empty());
        let (_dir, path) = file(&format!("{GOOD}\n{GOOD}\n"), 0o600);
        assert!(matches!(
            load_client_key(&path),
            Err(KeyFileError::Syntax { line: 2, .. })
        ));
        let (_dir, path) = file("", 0o600);
        assert!(matches!(
            load_client_key(&path),
            Err(KeyFileError::Empty { .. })
        ));
    }

    #[test]
    fn files_others_can_change_are_refused_and_readable_ones_warned_about() {
        for mode in [0o620, 0o602, 0o666] {
            let (_dir, path) = file(GOOD, mode);
            let e = load_client_key(&path).unwrap_err();
            assert!(matches!(e, KeyFileError::Unsafe { .. }), "{mode:o}: {e}");
            assert!(e.to_string().contains("chmod go-w"), "{e}");
        }
        let (_dir, path) = file(GOOD, 0o644);
        let loaded = load_client_key(&path).unwrap();
        assert_eq!(loaded.warnings.len(), 1);
        assert!(loaded.warnings[0].contains("readable by every user"));
        let (_dir, path) = file(GOOD, 0o640);
        assert!(load_client_key(&path).unwrap().warnings.is_empty());
    }

    #[test]
    fn files_owned_by_someone_else_are_refused() {
        let path = Path::new("/k");
        let facts = |owner, euid| FileFacts {
            kind: Some(Kind::File),
            mode: 0o600,
            owner,
            euid,
        };
        let e = check_permissions(path, &facts(1000, 1001), Kind::File).unwrap_err();
        assert_eq!(
            e.to_string(),
            "refusing /k: it is owned by uid 1000, neither the user running this (uid 1001) \
             nor root; run `chown 1001 /k` (or use one of your own)"
        );
        assert!(check_permissions(path, &facts(1000, 1000), Kind::File).is_ok());
        assert!(check_permissions(path, &facts(0, 1000), Kind::File).is_ok());
        let dir = FileFacts {
            kind: Some(Kind::Directory),
            ..facts(0, 0)
        };
        let e = check_permissions(path, &dir, Kind::File).unwrap_err();
        assert!(e.to_string().contains("not a regular file"));
        // A real directory is seen as one.
        let tmp = tempfile::tempdir().unwrap();
        assert!(check_private_file(tmp.path()).is_err());
    }

    #[test]
    fn a_private_directory_follows_the_same_rules() {
        let facts = |mode, owner, euid| FileFacts {
            kind: Some(Kind::Directory),
            mode,
            owner,
            euid,
        };
        let path = Path::new("/s");
        let check = |f| check_permissions(path, &f, Kind::Directory);
        assert_eq!(
            check(facts(0o700, 1000, 1000)).unwrap(),
            Vec::<String>::new()
        );
        // Listing it is fine; writing in it is not.
        assert!(check(facts(0o755, 1000, 1000)).unwrap().is_empty());
        assert_eq!(
            check(facts(0o777, 1000, 1000)).unwrap_err().to_string(),
            "refusing /s: it is writable by every user (mode 0777); run `chmod go-w /s` (or \
             `chmod 700`)"
        );
        assert!(
            check(facts(0o770, 1000, 1000))
                .unwrap_err()
                .to_string()
                .contains("writable by its group")
        );
        assert!(
            check(facts(0o700, 1000, 1001))
                .unwrap_err()
                .to_string()
                .contains("run `chown 1001 /s`")
        );
        let file = FileFacts {
            kind: Some(Kind::File),
            ..facts(0o700, 0, 0)
        };
        assert!(
            check(file)
                .unwrap_err()
                .to_string()
                .contains("not a directory")
        );
        let tmp = tempfile::tempdir().unwrap();
        let meta = fs::metadata(tmp.path()).unwrap();
        assert!(check_private_dir(tmp.path(), &meta).is_ok());
    }

    #[test]
    fn a_missing_file_is_a_read_error_naming_it() {
        let e = load_auth_keys(Path::new("/nonexistent/keys")).unwrap_err();
        assert!(
            e.to_string().starts_with("cannot read /nonexistent/keys: "),
            "{e}"
        );
    }
}
