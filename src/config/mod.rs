//! Configuration: `<workdir>/pageserver.toml`, overridden by `-c key=value` arguments whose values are TOML
//! (docs/operations.md, Configuration).
//!
//! Loading works on TOML tables first and on types last, so that every error can name the key it is about:
//! 1. the file and each override are parsed to tables;
//! 2. tenant keys at the top level (`checkpoint_distance = ...`) move into `tenant_config` (a shorthand);
//! 3. overrides are merged over the file, table by table, in the order given;
//! 4. the merged table is deserialized into [`NodeConfig`] (unknown keys and wrong types fail here), and
//! 5. values are validated (a zero timeout, a malformed address, ...).

mod node;
mod overrides;
mod tenant;
mod types;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

pub use node::{
    AuthType, AzureConfig, LocalFsConfig, LogFormat, NodeConfig, RemoteStorageConfig,
    RemoteStorageKind, S3Config,
};
pub use overrides::TenantConfigOverrides;
pub use tenant::{TENANT_CONFIG_KEYS, TenantConfig};
pub use types::HumanDuration;

/// File name of the node config inside the workdir.
pub const CONFIG_FILE_NAME: &str = "pageserver.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already exists; remove it or start without --init")]
    AlreadyExists { path: PathBuf },
    #[error("{path} is not valid TOML: {msg}")]
    Syntax { path: PathBuf, msg: String },
    #[error(
        "-c {arg:?}: expected key=value with a TOML value, such as -c listen_http_addr='127.0.0.1:9898': {msg}"
    )]
    Override { arg: String, msg: String },
    #[error("config key `{key}` is given twice: at the top level and in [tenant_config]")]
    Duplicate { key: String },
    #[error("unknown config key `{key}`")]
    UnknownKey { key: String },
    #[error("config key `{key}`: {msg}")]
    BadValue { key: String, msg: String },
    #[error("config key `{key}`: expected {expected}")]
    Invalid { key: String, expected: String },
}

/// Loads the config of `workdir`: its `pageserver.toml` if present, then `overrides` (`key=value` strings).
pub fn load(workdir: &Path, overrides: &[String]) -> Result<NodeConfig, ConfigError> {
    let path = workdir.join(CONFIG_FILE_NAME);
    let mut table = match fs::read_to_string(&path) {
        Ok(text) => parse_file(&path, &text)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    apply_overrides(&mut table, overrides)?;
    from_table(table)
}

/// Writes `<workdir>/pageserver.toml` with the defaults plus `overrides`; refuses to replace an existing file.
pub fn init(workdir: &Path, overrides: &[String]) -> Result<NodeConfig, ConfigError> {
    let mut table = toml::Table::new();
    apply_overrides(&mut table, overrides)?;
    let config = from_table(table)?;
    let path = workdir.join(CONFIG_FILE_NAME);
    let write_err = |source| ConfigError::Write {
        path: path.clone(),
        source,
    };
    fs::create_dir_all(workdir).map_err(write_err)?;
    let body = toml::to_string_pretty(&config).map_err(|e| ConfigError::Write {
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    let mut file = match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(ConfigError::AlreadyExists { path });
        }
        Err(e) => return Err(write_err(e)),
    };
    let header = "# pageserver.toml, written by `pageserver --init`: every key with its value.\n\
                  # See pageserver.toml.example for what each key does.\n\n";
    file.write_all(header.as_bytes())
        .and_then(|_| file.write_all(body.as_bytes()))
        .and_then(|_| file.sync_all())
        .map_err(write_err)?;
    Ok(config)
}

/// Parses a config file's text into a normalized table.
pub fn parse_file(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: path.to_path_buf(),
            msg: one_line(&e.to_string()),
        })?;
    normalize(table)
}

/// Merges `key=value` overrides, each a TOML document of its own, over `table`.
pub fn apply_overrides(table: &mut toml::Table, overrides: &[String]) -> Result<(), ConfigError> {
    for arg in overrides {
        let parsed: toml::Table =
            arg.parse()
                .map_err(|e: toml::de::Error| ConfigError::Override {
                    arg: arg.clone(),
                    msg: one_line(e.message()),
                })?;
        if parsed.is_empty() {
            return Err(ConfigError::Override {
                arg: arg.clone(),
                msg: "no key given".into(),
            });
        }
        merge(table, normalize(parsed)?);
    }
    Ok(())
}

/// Turns a normalized table into a validated config.
pub fn from_table(table: toml::Table) -> Result<NodeConfig, ConfigError> {
    let value = toml::Value::Table(table);
    let config: NodeConfig = serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        let mut msg = one_line(&e.inner().to_string());
        // toml repeats the key at the end of its messages; the error names it already.
        if let Some(stripped) = msg.strip_suffix(&format!(" in `{key}`")) {
            msg = stripped.to_string();
        }
        match msg
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split_once('`'))
        {
            // The path ends at the unknown key itself, except where a nested table was parsed on its own
            // (remote_storage): then the path ends at that table.
            Some((field, _)) if key == field || key.ends_with(&format!(".{field}")) => {
                ConfigError::UnknownKey { key }
            }
            Some((field, _)) => ConfigError::UnknownKey {
                key: format!("{key}.{field}"),
            },
            None => ConfigError::BadValue { key, msg },
        }
    })?;
    config.validate()?;
    Ok(config)
}

/// Moves top-level tenant keys into the `tenant_config` table.
fn normalize(mut table: toml::Table) -> Result<toml::Table, ConfigError> {
    let mut moved = toml::Table::new();
    for key in TENANT_CONFIG_KEYS {
        if let Some(value) = table.remove(*key) {
            moved.insert(key.to_string(), value);
        }
    }
    if moved.is_empty() {
        return Ok(table);
    }
    match table
        .entry("tenant_config")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
    {
        toml::Value::Table(tenant) => {
            for (key, value) in moved {
                if tenant.contains_key(&key) {
                    return Err(ConfigError::Duplicate { key });
                }
                tenant.insert(key, value);
            }
            Ok(table)
        }
        _ => Err(ConfigError::BadValue {
            key: "tenant_config".into(),
            msg: "expected a table".into(),
        }),
    }
}

/// Merges `over` into `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Folds a multi-line error message into one line.
pub(crate) fn one_line(msg: &str) -> String {
    msg.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests;
