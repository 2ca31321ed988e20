//! The layering: the embedded default, a profile, a config file and the flags, each merged key
//! by key and checked as it is applied so an error names the layer it came from.

use std::path::Path;

use serde::Deserialize;

use super::validate::invalid;
use super::{
    Config, ConfigError, DurabilityMode, ServeOverrides, ShardCount, DEFAULT_TOML,
    EMBEDDED_PROFILES,
};

impl Config {
    /// Loads default → profile → config file → flags, then validates the result.
    pub fn load(overrides: &ServeOverrides) -> Result<Config, ConfigError> {
        let mut loader = Loader::new()?;
        if let Some(profile) = &overrides.profile {
            let (origin, text) = profile_source(profile)?;
            loader.apply_text(&origin, &text)?;
        }
        if let Some(path) = &overrides.config {
            let text = read_file(path)?;
            loader.apply_text(&format!("config file {}", path.display()), &text)?;
        }
        loader.apply(
            "command-line flags",
            toml::Value::Table(overrides_table(overrides)?),
        )?;
        let config = loader.config;
        config.validate()?;
        Ok(config)
    }

    /// The embedded default profile alone; a broken embedded default is a build bug, so it panics.
    pub fn embedded_default() -> Config {
        let loader = Loader::new().expect("embedded tuning/default.toml must parse");
        loader.config
    }
}

/// Applies layers one at a time so each error names the layer it came from.
struct Loader {
    /// The merged TOML so far; always deserializes into `config`.
    merged: toml::Table,
    /// The typed view of `merged`, refreshed after every layer.
    config: Config,
}

impl Loader {
    /// Starts from the embedded default, which must set every knob.
    fn new() -> Result<Loader, ConfigError> {
        const ORIGIN: &str = "embedded profile `default` (tuning/default.toml)";
        let merged = parse_table(ORIGIN, DEFAULT_TOML)?;
        let config = deserialize(ORIGIN, &merged)?;
        Ok(Loader { merged, config })
    }

    /// Parses one layer's text and applies it.
    fn apply_text(&mut self, origin: &str, text: &str) -> Result<(), ConfigError> {
        let table = parse_table(origin, text)?;
        self.apply(origin, toml::Value::Table(table))
    }

    /// Overlays one layer: every key must exist in the base with the same shape.
    fn apply(&mut self, origin: &str, layer: toml::Value) -> Result<(), ConfigError> {
        let toml::Value::Table(layer) = layer else {
            return Err(parse_error(origin, "a layer must be a TOML table".into()));
        };
        let mut merged = self.merged.clone();
        merge_table(&mut merged, layer, "").map_err(|message| parse_error(origin, message))?;
        self.config = deserialize(origin, &merged)?;
        self.merged = merged;
        Ok(())
    }
}

/// Merges `overlay` into `base` key by key; a key absent from `base` is an unknown key.
pub(super) fn merge_table(
    base: &mut toml::Table,
    overlay: toml::Table,
    prefix: &str,
) -> Result<(), String> {
    for (key, value) in overlay {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let Some(slot) = base.get_mut(&key) else {
            let known: Vec<&str> = base.keys().map(String::as_str).collect();
            let place = if prefix.is_empty() {
                "at the top level".to_string()
            } else {
                format!("in [{prefix}]")
            };
            return Err(format!(
                "unknown key `{path}` (known keys {place}: {})",
                known.join(", ")
            ));
        };
        match (slot, value) {
            (toml::Value::Table(base_table), toml::Value::Table(overlay_table)) => {
                merge_table(base_table, overlay_table, &path)?;
            }
            (toml::Value::Table(_), _) => {
                return Err(format!("`{path}` must be a table ([{path}])"));
            }
            (_, toml::Value::Table(_)) => {
                return Err(format!("`{path}` is a single value, not a table"));
            }
            (slot, value) => *slot = value,
        }
    }
    Ok(())
}

/// Parses a layer's text as a TOML table.
fn parse_table(origin: &str, text: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>()
        .map_err(|error| parse_error(origin, error.to_string()))
}

/// Deserializes the merged table; type errors are blamed on the layer just applied.
fn deserialize(origin: &str, merged: &toml::Table) -> Result<Config, ConfigError> {
    Config::deserialize(toml::Value::Table(merged.clone()))
        // serde puts the key path on a second line; one line reads better in a log.
        .map_err(|error| parse_error(origin, error.to_string().trim_end().replace('\n', " ")))
}

/// Builds a parse error for one layer.
fn parse_error(origin: &str, message: String) -> ConfigError {
    ConfigError::Parse {
        origin: origin.to_string(),
        message,
    }
}

/// Resolves `--profile` to its origin label and TOML text.
fn profile_source(profile: &str) -> Result<(String, String), ConfigError> {
    // A slash or a .toml suffix means a file, so a site profile never shadows an embedded name.
    if profile.contains('/') || profile.ends_with(".toml") {
        let path = Path::new(profile);
        let text = read_file(path)?;
        return Ok((format!("profile file {}", path.display()), text));
    }
    match EMBEDDED_PROFILES.iter().find(|(name, _)| *name == profile) {
        Some((name, text)) => Ok((
            format!("embedded profile `{name}` (tuning/{name}.toml)"),
            (*text).to_string(),
        )),
        None => Err(ConfigError::UnknownProfile {
            name: profile.to_string(),
            known: EMBEDDED_PROFILES
                .iter()
                .map(|(name, _)| *name)
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Reads a layer file.
fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Turns the command-line overrides into a partial TOML layer.
fn overrides_table(overrides: &ServeOverrides) -> Result<toml::Table, ConfigError> {
    let mut root = toml::Table::new();
    let mut listeners = toml::Table::new();
    if let Some(address) = overrides.mqtt_listen {
        listeners.insert("mqtt".into(), toml::Value::String(address.to_string()));
    }
    if let Some(address) = overrides.http_listen {
        listeners.insert("http".into(), toml::Value::String(address.to_string()));
    }
    if let Some(address) = overrides.mqtts_listen {
        listeners.insert("mqtts".into(), toml::Value::String(address.to_string()));
    }
    if let Some(address) = overrides.https_listen {
        listeners.insert("https".into(), toml::Value::String(address.to_string()));
    }
    if let Some(placement) = overrides.placement {
        listeners.insert(
            "placement".into(),
            toml::Value::String(placement.to_string()),
        );
    }
    if !listeners.is_empty() {
        root.insert("listeners".into(), toml::Value::Table(listeners));
    }
    if let Some(count) = overrides.shards {
        let value = match count {
            ShardCount::Auto => toml::Value::String("auto".into()),
            ShardCount::Fixed(count) => match i64::try_from(count) {
                Ok(count) => toml::Value::Integer(count),
                Err(_) => return invalid(format!("--shards {count} is out of range")),
            },
        };
        let mut shards = toml::Table::new();
        shards.insert("count".into(), value);
        root.insert("shards".into(), toml::Value::Table(shards));
    }
    if let Some(data_dir) = &overrides.data_dir {
        let Some(text) = data_dir.to_str() else {
            return invalid(format!(
                "--data-dir must be valid UTF-8, got {}",
                data_dir.display()
            ));
        };
        root.insert("data_dir".into(), toml::Value::String(text.to_string()));
    }
    if overrides.durability.is_some() || overrides.repair {
        let mut durability = toml::Table::new();
        if let Some(mode) = overrides.durability {
            let name = match mode {
                DurabilityMode::Memory => "memory",
                DurabilityMode::Periodic => "periodic",
                DurabilityMode::Sync => "sync",
            };
            durability.insert("mode".into(), toml::Value::String(name.into()));
        }
        if overrides.repair {
            durability.insert("repair".into(), toml::Value::Boolean(true));
        }
        root.insert("durability".into(), toml::Value::Table(durability));
    }
    if overrides.cluster.is_some() || overrides.node_id.is_some() {
        let mut cluster = toml::Table::new();
        if let Some(url) = &overrides.cluster {
            cluster.insert("nats".into(), toml::Value::String(url.clone()));
        }
        if let Some(id) = &overrides.node_id {
            cluster.insert("node_id".into(), toml::Value::String(id.clone()));
        }
        root.insert("cluster".into(), toml::Value::Table(cluster));
    }
    if let Some(url) = &overrides.store {
        let mut control = toml::Table::new();
        control.insert("store".into(), toml::Value::String(url.clone()));
        root.insert("control".into(), toml::Value::Table(control));
    }
    Ok(root)
}
