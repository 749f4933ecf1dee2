//! Merging defaults, the file, environment variables and flags with figment,
//! and turning figment's errors into messages that name the key, the value,
//! where it was set and the fix.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use figment::error::Kind;
use figment::providers::{Env, Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};
use serde::Serialize;
use thiserror::Error;

use super::check::check;
use super::example::{is_secret, is_top_level_key};
use super::values::{FIX_PREFIX, REDACTED};
use super::Settings;
use crate::config::Config;

/// Prefix of the environment variables that set keys.
pub const ENV_PREFIX: &str = "SEALCAST_";

/// Separator between a table and its key in environment variable names.
pub const ENV_SEPARATOR: &str = "__";

/// Settings after merging and checking, and the relay configuration they make.
#[derive(Debug)]
pub struct Loaded {
    /// The effective settings, as `config check` prints them.
    pub settings: Settings,
    /// The configuration to start the relay with.
    pub config: Config,
}

/// A configuration that cannot be used.
#[derive(Debug, Error)]
pub enum SettingsError {
    /// The file named by `--config` or `SEALCAST_CONFIG` cannot be read.
    #[error(
        "failed to read the configuration file {path}: {source}: check --config or SEALCAST_CONFIG"
    )]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A flag's value cannot be stored as a setting, such as a path that is
    /// not UTF-8.
    #[error("invalid flag value: {0}")]
    Flags(Box<figment::Error>),
    /// One or more keys have invalid values or are unknown.
    #[error("{}", list_problems(.0))]
    Invalid(Vec<InvalidSetting>),
}

fn list_problems(problems: &[InvalidSetting]) -> String {
    match problems {
        [one] => format!("invalid setting {one}"),
        many => {
            let mut text = format!("{} invalid settings:", many.len());
            for problem in many {
                text.push_str("\n  ");
                text.push_str(&problem.to_string());
            }
            text
        }
    }
}

/// One invalid or unknown key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSetting {
    /// Dotted key path, such as `limits.max_connections`; empty for an error
    /// of a whole file, such as a TOML syntax error.
    pub key: String,
    /// The value as TOML, or [`REDACTED`] for a secret.
    pub value: Option<String>,
    /// Source of the value, such as `in /etc/sealcast-relay.toml`.
    pub origin: String,
    /// The problem and its fix.
    pub problem: String,
}

impl fmt::Display for InvalidSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.key.is_empty() {
            f.write_str(&self.key)?;
            if let Some(value) = &self.value {
                write!(f, " = {value}")?;
            }
            f.write_str(" ")?;
        }
        write!(f, "{}: {}", self.origin, self.problem)
    }
}

impl InvalidSetting {
    /// Describes a problem with `key`, looking its value and origin up in `figment`.
    pub(super) fn at(figment: &Figment, key: &str, problem: impl Into<String>) -> Self {
        let metadata = figment.find_metadata(key);
        let value = figment
            .find_value(key)
            .ok()
            .map(|value| render(key, &value));
        let problem = problem.into().replace(FIX_PREFIX, &format!("set {key} to"));
        InvalidSetting {
            key: key.to_owned(),
            value,
            origin: describe_origin(metadata, key),
            problem,
        }
    }
}

/// Values set from one source, such as the command-line flags, by key path.
#[derive(Debug, Clone)]
pub struct Layer {
    name: &'static str,
    values: Dict,
}

impl Layer {
    /// Starts an empty layer. Messages name `name` as the source of its values.
    pub fn new(name: &'static str) -> Self {
        Layer {
            name,
            values: Dict::new(),
        }
    }

    /// Sets the key at dotted `path` to `value`, serialized as the file would hold it.
    pub fn set(&mut self, path: &str, value: impl Serialize) -> Result<(), Box<figment::Error>> {
        let value = Value::serialize(value).map_err(Box::new)?;
        let mut table = &mut self.values;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                table.insert(part.to_owned(), value);
                break;
            }
            let entry = table
                .entry(part.to_owned())
                .or_insert_with(|| Value::from(Dict::new()));
            if !matches!(entry, Value::Dict(..)) {
                *entry = Value::from(Dict::new());
            }
            let Value::Dict(_, inner) = entry else {
                unreachable!("the entry was made a table just above");
            };
            table = inner;
        }
        Ok(())
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.values.clone()))
    }
}

/// Returns the built-in defaults as a layer.
fn defaults() -> Layer {
    let mut layer = Layer::new("defaults");
    // `Settings` is a struct, which figment serializes to a table.
    if let Ok(Value::Dict(_, values)) = Value::serialize(Settings::default()) {
        layer.values = values;
    }
    layer
}

/// Merges the defaults, `file`, the environment and `layers` (in rising
/// precedence), then checks every value.
pub fn load(file: Option<&Path>, layers: Vec<Layer>) -> Result<Loaded, SettingsError> {
    let mut figment = Figment::from(defaults());

    if let Some(path) = file {
        // figment reads a missing file as an empty one, so check first.
        std::fs::read(path).map_err(|source| SettingsError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment.merge(environment());
    for layer in layers {
        figment = figment.merge(layer);
    }

    let settings: Settings = figment.extract().map_err(|error| {
        SettingsError::Invalid(error.into_iter().map(|e| explain(&figment, e)).collect())
    })?;
    let config = check(&settings, &figment).map_err(SettingsError::Invalid)?;
    Ok(Loaded { settings, config })
}

/// `SEALCAST_<KEY>` for top-level keys and `SEALCAST_<TABLE>__<KEY>` for
/// keys in tables. Other `SEALCAST_` variables belong to other programs and
/// the test suite, so they are left alone, except those with `__`, which
/// can only be meant for a table here and are checked like file keys.
fn environment() -> Env {
    Env::prefixed(ENV_PREFIX)
        .filter(|key| key.as_str().contains(ENV_SEPARATOR) || is_top_level_key(key.as_str()))
        .split(ENV_SEPARATOR)
}

/// Turns one figment error into a message about its key.
fn explain(figment: &Figment, error: figment::Error) -> InvalidSetting {
    let mut path = error.path.clone();
    if let Kind::UnknownField(field, _) = &error.kind {
        if path.last() != Some(field) {
            path.push(field.clone());
        }
    }
    let key = path.join(".");
    let problem = match &error.kind {
        Kind::Message(message) => message.clone(),
        Kind::UnknownField(_, known) => format!(
            "unknown key; remove it or fix its spelling (the keys here are {})",
            known.join(", ")
        ),
        Kind::UnknownVariant(_, known) => format!(
            "not a known value; set {key} to one of {}",
            known.join(", ")
        ),
        Kind::InvalidType(_, expected) | Kind::InvalidValue(_, expected) => {
            expected_value(&key, expected)
        }
        other => other.to_string(),
    };
    if key.is_empty() {
        return InvalidSetting {
            key,
            value: None,
            origin: describe_origin(error.metadata.as_ref(), ""),
            problem,
        };
    }
    let mut invalid = InvalidSetting::at(figment, &key, problem);
    if let Some(metadata) = &error.metadata {
        invalid.origin = describe_origin(Some(metadata), &key);
    }
    invalid
}

/// Says what kind of value `key` takes, with its default as an example.
fn expected_value(key: &str, expected: &str) -> String {
    let kind = match expected {
        "usize" | "u64" | "u32" | "u16" | "u8" => "a whole number",
        "a string" => "text in quotes",
        other => other,
    };
    match Figment::from(defaults()).find_value(key) {
        Ok(default) => format!(
            "not {kind}; set {key} to {kind} such as {}",
            render(key, &default)
        ),
        Err(_) => format!("not {kind}; set {key} to {kind}"),
    }
}

/// Names where a value came from: the file, the environment variable or the layer.
fn describe_origin(metadata: Option<&Metadata>, key: &str) -> String {
    let Some(metadata) = metadata else {
        return "in the configuration".into();
    };
    if let Some(Source::File(path)) = &metadata.source {
        return format!("in {}", path.display());
    }
    // figment names its environment provider "`SEALCAST_` environment variable(s)".
    if metadata.name.ends_with("environment variable(s)") {
        let name = key.replace('.', ENV_SEPARATOR).to_ascii_uppercase();
        return format!("from environment variable {ENV_PREFIX}{name}");
    }
    format!("from the {}", metadata.name)
}

/// Writes a value as TOML would, hiding secrets.
fn render(key: &str, value: &Value) -> String {
    if is_secret(key) {
        return REDACTED.to_owned();
    }
    match toml::Value::try_from(value) {
        Ok(toml::Value::Table(_)) => "a table".to_owned(),
        Ok(value) => value.to_string(),
        Err(_) => format!("{value:?}"),
    }
}
