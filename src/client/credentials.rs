//! The stored login (`credentials.toml`) and where each command's URL and key come from.
//!
//! Precedence, per value: `--url`/`--key` flag, then `RINGMQ_URL`/`RINGMQ_KEY`, then the stored
//! login. The file holds a secret key, so it is written 0600 in a directory created 0700, via a
//! temporary file and a rename so a crash never leaves a half-written or world-readable file.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ClientError, Secret};

/// The credentials file's name inside the config directory.
pub const FILE_NAME: &str = "credentials.toml";

/// Environment lookups, abstracted so tests need not mutate the process environment.
pub trait Env {
    /// The variable's value; `None` when unset or empty.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl<F: Fn(&str) -> Option<String>> Env for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name).filter(|v| !v.is_empty())
    }
}

/// The config directory: `$RINGMQ_CONFIG_DIR`, else `$XDG_CONFIG_HOME/ringmq`, else
/// `$HOME/.config/ringmq`.
pub fn config_dir(env: &dyn Env) -> Result<PathBuf, ClientError> {
    if let Some(dir) = env.var("RINGMQ_CONFIG_DIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(xdg) = env.var("XDG_CONFIG_HOME") {
        return Ok(Path::new(&xdg).join("ringmq"));
    }
    if let Some(home) = env.var("HOME") {
        return Ok(Path::new(&home).join(".config").join("ringmq"));
    }
    Err(ClientError::NotConfigured(
        "cannot find a config directory: set RINGMQ_CONFIG_DIR, XDG_CONFIG_HOME or HOME".into(),
    ))
}

/// The credentials file's path.
pub fn credentials_path(env: &dyn Env) -> Result<PathBuf, ClientError> {
    Ok(config_dir(env)?.join(FILE_NAME))
}

/// What `ringmq auth login` stores.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredLogin {
    /// Server base URL.
    pub url: String,
    /// API key.
    pub key: String,
    /// The private CA trusted for an https URL (`--ca` at login), as an absolute path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
}

impl fmt::Debug for StoredLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredLogin")
            .field("url", &self.url)
            .field("key", &"<redacted>")
            .field("ca", &self.ca)
            .finish()
    }
}

/// Reads the stored login; `None` when there is no file.
pub fn load(path: &Path) -> Result<Option<StoredLogin>, ClientError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ClientError::Credentials {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    // Only the parser's message: its Display quotes the offending line, which may be the key.
    toml::from_str(&text)
        .map(Some)
        .map_err(|e| ClientError::CredentialsFormat {
            path: path.to_path_buf(),
            reason: e.message().to_string(),
        })
}

/// Writes the login to `path` (mode 0600), creating its directory (mode 0700) if needed.
pub fn save(path: &Path, login: &StoredLogin) -> Result<(), ClientError> {
    let err = |p: &Path| {
        let p = p.to_path_buf();
        move |source: io::Error| ClientError::Credentials { path: p, source }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.as_os_str().is_empty() && !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err(dir))?;
    }
    let text = toml::to_string(login).map_err(|e| ClientError::CredentialsFormat {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let tmp = path.with_extension("toml.tmp");
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(ClientError::Credentials { path: tmp, source }),
    }
    // create_new + mode: the secret is never in a file another user could have opened first.
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err(&tmp))?;
    file.write_all(text.as_bytes()).map_err(err(&tmp))?;
    file.sync_all().map_err(err(&tmp))?;
    drop(file);
    // The umask can only remove bits from 0600, but make the mode exact regardless.
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).map_err(err(&tmp))?;
    fs::rename(&tmp, path).map_err(err(path))?;
    Ok(())
}

/// Deletes the stored login; `false` when there was none.
pub fn remove(path: &Path) -> Result<bool, ClientError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(ClientError::Credentials {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Where a resolved value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `--url` / `--key`.
    Flag,
    /// `RINGMQ_URL` / `RINGMQ_KEY`.
    Env,
    /// The stored login.
    File,
}

impl Source {
    /// How `auth status` names it.
    pub fn describe(self, flag: &str, var: &str) -> String {
        match self {
            Source::Flag => format!("{flag} flag"),
            Source::Env => var.to_string(),
            Source::File => "stored login".to_string(),
        }
    }
}

/// The server a command talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Server base URL.
    pub url: String,
    /// API key.
    pub key: Secret,
    /// Where the URL came from.
    pub url_source: Source,
    /// Where the key came from.
    pub key_source: Source,
    /// The private CA to trust for an https URL, if any.
    pub ca: Option<PathBuf>,
}

/// Picks the URL and key by precedence flag > env > stored login, each value separately; the
/// CA by `--ca` > `RINGMQ_CA` > the stored login's when the URL is the stored login's too (a CA
/// belongs to its server).
pub fn resolve(
    flag_url: Option<&str>,
    flag_key: Option<&Secret>,
    flag_ca: Option<&Path>,
    env: &dyn Env,
    stored: Option<&StoredLogin>,
) -> Result<Target, ClientError> {
    let (url, url_source) = match (flag_url, env.var("RINGMQ_URL"), stored) {
        (Some(url), _, _) => (url.to_string(), Source::Flag),
        (None, Some(url), _) => (url, Source::Env),
        (None, None, Some(s)) => (s.url.clone(), Source::File),
        (None, None, None) => {
            return Err(ClientError::NotConfigured(
                "no server URL: pass --url, set RINGMQ_URL, or run `ringmq auth login`".into(),
            ))
        }
    };
    let (key, key_source) = match (flag_key, env.var("RINGMQ_KEY"), stored) {
        (Some(key), _, _) => (key.clone(), Source::Flag),
        (None, Some(key), _) => (Secret::new(key), Source::Env),
        (None, None, Some(s)) => (Secret::new(s.key.clone()), Source::File),
        (None, None, None) => {
            return Err(ClientError::NotConfigured(
                "no API key: pass --key, set RINGMQ_KEY, or run `ringmq auth login`".into(),
            ))
        }
    };
    let ca = match (flag_ca, env.var("RINGMQ_CA"), stored) {
        (Some(ca), _, _) => Some(ca.to_path_buf()),
        (None, Some(ca), _) if !ca.is_empty() => Some(PathBuf::from(ca)),
        (None, _, Some(s)) if url_source == Source::File => s.ca.as_ref().map(PathBuf::from),
        _ => None,
    };
    Ok(Target {
        url,
        key,
        url_source,
        key_source,
        ca,
    })
}

/// [`resolve`], reading the stored login only when a flag or env value is missing (so a broken
/// file does not break commands that do not need it).
pub fn resolve_from(
    flag_url: Option<&str>,
    flag_key: Option<&Secret>,
    flag_ca: Option<&Path>,
    env: &dyn Env,
) -> Result<Target, ClientError> {
    let complete = (flag_url.is_some() || env.var("RINGMQ_URL").is_some())
        && (flag_key.is_some() || env.var("RINGMQ_KEY").is_some());
    let stored = if complete {
        None
    } else {
        load(&credentials_path(env)?)?
    };
    resolve(flag_url, flag_key, flag_ca, env, stored.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name: &str| map.get(name).cloned()
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ringmq-cred-{tag}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn stored() -> StoredLogin {
        StoredLogin {
            url: "http://file:1".into(),
            key: "sk_file".into(),
            ca: None,
        }
    }

    #[test]
    fn config_dir_precedence() {
        let env = env_of(&[
            ("RINGMQ_CONFIG_DIR", "/a"),
            ("XDG_CONFIG_HOME", "/x"),
            ("HOME", "/h"),
        ]);
        assert_eq!(config_dir(&env).unwrap(), PathBuf::from("/a"));
        let env = env_of(&[("XDG_CONFIG_HOME", "/x"), ("HOME", "/h")]);
        assert_eq!(
            credentials_path(&env).unwrap(),
            PathBuf::from("/x/ringmq/credentials.toml")
        );
        let env = env_of(&[("HOME", "/h"), ("XDG_CONFIG_HOME", "")]);
        assert_eq!(
            config_dir(&env).unwrap(),
            PathBuf::from("/h/.config/ringmq")
        );
        assert!(matches!(
            config_dir(&env_of(&[])),
            Err(ClientError::NotConfigured(_))
        ));
    }

    #[test]
    fn flag_beats_env_beats_file() {
        let file = stored();
        let env = env_of(&[("RINGMQ_URL", "http://env:1"), ("RINGMQ_KEY", "sk_env")]);
        let flag_key = Secret::new("sk_flag");
        let t = resolve(
            Some("http://flag:1"),
            Some(&flag_key),
            None,
            &env,
            Some(&file),
        )
        .unwrap();
        assert_eq!(
            (t.url.as_str(), t.key.expose()),
            ("http://flag:1", "sk_flag")
        );
        assert_eq!((t.url_source, t.key_source), (Source::Flag, Source::Flag));

        let t = resolve(None, None, None, &env, Some(&file)).unwrap();
        assert_eq!((t.url.as_str(), t.key.expose()), ("http://env:1", "sk_env"));
        assert_eq!((t.url_source, t.key_source), (Source::Env, Source::Env));

        let t = resolve(Some("http://flag:1"), None, None, &env_of(&[]), Some(&file)).unwrap();
        assert_eq!(
            (t.url.as_str(), t.key.expose()),
            ("http://flag:1", "sk_file")
        );
        assert_eq!((t.url_source, t.key_source), (Source::Flag, Source::File));

        // An empty variable counts as unset.
        let env = env_of(&[("RINGMQ_URL", ""), ("RINGMQ_KEY", "")]);
        let t = resolve(None, None, None, &env, Some(&file)).unwrap();
        assert_eq!((t.url_source, t.key_source), (Source::File, Source::File));
    }

    #[test]
    fn missing_values_are_clear_errors() {
        let err = resolve(None, None, None, &env_of(&[]), None).unwrap_err();
        assert!(err.to_string().contains("--url"), "{err}");
        assert_eq!(err.exit_code(), 2);
        let err = resolve(Some("http://x:1"), None, None, &env_of(&[]), None).unwrap_err();
        assert!(err.to_string().contains("RINGMQ_KEY"), "{err}");
    }

    #[test]
    fn save_uses_private_modes_and_round_trips() {
        let root = temp_dir("save");
        let path = root.join("nested").join(FILE_NAME);
        assert_eq!(load(&path).unwrap(), None);
        save(&path, &stored()).unwrap();
        let file_mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        let dir_mode = fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(file_mode, 0o600);
        assert_eq!(dir_mode, 0o700);
        assert_eq!(load(&path).unwrap(), Some(stored()));

        // Overwriting keeps the mode and leaves no temporary file behind.
        let other = StoredLogin {
            url: "https://other:2".into(),
            key: "sk_other".into(),
            ca: Some("/etc/ringmq/ca.pem".into()),
        };
        save(&path, &other).unwrap();
        assert_eq!(load(&path).unwrap(), Some(other));
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(FILE_NAME)]);

        assert!(remove(&path).unwrap());
        assert!(!remove(&path).unwrap());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn resolve_from_reads_the_file_only_when_needed() {
        let root = temp_dir("resolve");
        fs::create_dir_all(&root).unwrap();
        let path = root.join(FILE_NAME);
        fs::write(&path, "not = [valid").unwrap();
        let dir = root.to_string_lossy().to_string();
        let env = env_of(&[
            ("RINGMQ_CONFIG_DIR", &dir),
            ("RINGMQ_URL", "http://env:1"),
            ("RINGMQ_KEY", "sk_env"),
        ]);
        assert!(resolve_from(None, None, None, &env).is_ok());
        let env = env_of(&[("RINGMQ_CONFIG_DIR", &dir)]);
        let err = resolve_from(None, None, None, &env).unwrap_err();
        assert!(
            matches!(err, ClientError::CredentialsFormat { .. }),
            "{err}"
        );

        save(&path, &stored()).unwrap();
        let t = resolve_from(None, None, None, &env).unwrap();
        assert_eq!(t.url, "http://file:1");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn bad_file_errors_do_not_quote_the_key() {
        let root = temp_dir("quote");
        fs::create_dir_all(&root).unwrap();
        let path = root.join(FILE_NAME);
        fs::write(&path, "url = \"http://x\"\nkey = sk_unquoted_secret\n").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(!err.contains("sk_unquoted_secret"), "{err}");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn stored_login_debug_is_redacted() {
        let text = format!("{:?}", stored());
        assert!(!text.contains("sk_file"), "{text}");
    }

    #[test]
    fn the_ca_follows_its_url() {
        let file = StoredLogin {
            url: "https://file:1".into(),
            key: "sk_file".into(),
            ca: Some("/stored/ca.pem".into()),
        };
        let env = env_of(&[]);
        let ca = |t: Target| t.ca.map(|p| p.display().to_string());
        // The stored CA goes with the stored URL...
        let t = resolve(None, None, None, &env, Some(&file)).unwrap();
        assert_eq!(ca(t).as_deref(), Some("/stored/ca.pem"));
        // ...not with another server's.
        let t = resolve(Some("https://flag:1"), None, None, &env, Some(&file)).unwrap();
        assert_eq!(ca(t), None);
        // --ca, then RINGMQ_CA, win.
        let flag = Path::new("/flag/ca.pem");
        let t = resolve(None, None, Some(flag), &env, Some(&file)).unwrap();
        assert_eq!(ca(t).as_deref(), Some("/flag/ca.pem"));
        let env = env_of(&[("RINGMQ_CA", "/env/ca.pem")]);
        let t = resolve(Some("https://flag:1"), None, None, &env, Some(&file)).unwrap();
        assert_eq!(ca(t).as_deref(), Some("/env/ca.pem"));
    }
}
