//! Plugin self-description and typed options with defaults (RON).

use anyhow::{anyhow, bail, Result};
use ron::Value;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The two kinds of plugins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PluginKind {
    /// A reverse-diffusion solver.
    Sampler,
    /// A learngene strategy.
    Strategy,
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PluginKind::Sampler => "sampler",
            PluginKind::Strategy => "strategy",
        })
    }
}

/// The type of an option's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OptionType {
    /// A real number.
    Float,
    /// A non-negative integer.
    Int,
    /// true / false.
    Bool,
    /// Free text.
    Text,
    /// One of the listed words.
    Choice(Vec<String>),
}

impl std::fmt::Display for OptionType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OptionType::Float => f.write_str("float"),
            OptionType::Int => f.write_str("int"),
            OptionType::Bool => f.write_str("bool"),
            OptionType::Text => f.write_str("text"),
            OptionType::Choice(c) => f.write_str(&c.join("|")),
        }
    }
}

/// One typed option with its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptionSpec {
    /// Option name, e.g. `eta`.
    pub name: String,
    /// Value type.
    pub ty: OptionType,
    /// Default, as a RON literal (`0.0`, `"trailing"`, `300`, `true`).
    pub default: String,
    /// One line saying what it does.
    pub doc: String,
}

impl OptionSpec {
    /// Shorthand constructor.
    pub fn new(name: &str, ty: OptionType, default: &str, doc: &str) -> Self {
        Self { name: name.into(), ty, default: default.into(), doc: doc.into() }
    }
}

/// What a plugin says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginInfo {
    /// Registry name, e.g. `ddim`, `fine`.
    pub name: String,
    /// Sampler or strategy.
    pub kind: PluginKind,
    /// The plugin's own version (semver).
    pub version: String,
    /// One line.
    pub description: String,
    /// Typed options with defaults.
    pub options: Vec<OptionSpec>,
}

/// Option values, checked against a plugin's [`OptionSpec`]s, defaults filled in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    values: BTreeMap<String, Value>,
}

fn check(spec: &OptionSpec, v: &Value) -> Result<()> {
    let ok = match (&spec.ty, v) {
        (OptionType::Float, Value::Number(n)) => n.into_f64().is_finite(),
        (OptionType::Int, Value::Number(n)) => n.as_i64().is_some_and(|i| i >= 0),
        (OptionType::Bool, Value::Bool(_)) => true,
        (OptionType::Text, Value::String(_)) => true,
        (OptionType::Choice(c), Value::String(s)) => c.contains(s),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        let got = ron::to_string(v).unwrap_or_else(|_| format!("{v:?}"));
        let want = match &spec.ty {
            OptionType::Float => "a finite number".to_string(),
            OptionType::Int => "a whole number ≥ 0".to_string(),
            OptionType::Bool => "true or false".to_string(),
            OptionType::Text => "text".to_string(),
            OptionType::Choice(c) => format!("one of {}", c.join(", ")),
        };
        bail!("option `{}` must be {want}, got `{got}`", spec.name)
    }
}

impl Options {
    /// Parses user options — a RON map `{"eta": 0.5}` or `name=value` pairs separated by
    /// commas (`eta=0.5,spacing=trailing`) — against `info`. Unknown names and
    /// ill-typed values are errors naming the option and the plugin.
    pub fn parse(info: &PluginInfo, text: &str) -> Result<Self> {
        let mut given: BTreeMap<String, Value> = BTreeMap::new();
        let text = text.trim();
        if text.starts_with('{') {
            let v: BTreeMap<String, Value> =
                ron::from_str(text).map_err(|e| anyhow!("options for `{}`: {e}", info.name))?;
            given.extend(v);
        } else if !text.is_empty() {
            for pair in text.split(',') {
                let (k, v) = pair.split_once('=').ok_or_else(|| anyhow!("option `{pair}` is not name=value"))?;
                let (k, v) = (k.trim(), v.trim());
                let spec = info.options.iter().find(|o| o.name == k);
                let value = match spec.map(|s| &s.ty) {
                    Some(OptionType::Text | OptionType::Choice(_)) if !v.starts_with('"') => Value::String(v.into()),
                    // Rust's float syntax, so `nan` and `inf` are numbers (refused as not finite).
                    Some(OptionType::Float) if v.parse::<f64>().is_ok() => {
                        Value::Number(v.parse::<f64>().expect("checked").into())
                    }
                    _ => ron::from_str(v).map_err(|e| anyhow!("option `{k}`: `{v}` is not a value ({e})"))?,
                };
                given.insert(k.to_string(), value);
            }
        }
        Self::from_values(info, given)
    }

    /// Checks given values against `info` and fills defaults.
    pub fn from_values(info: &PluginInfo, mut given: BTreeMap<String, Value>) -> Result<Self> {
        let mut values = BTreeMap::new();
        for spec in &info.options {
            let v = match given.remove(&spec.name) {
                Some(v) => v,
                None => ron::from_str(&spec.default)
                    .map_err(|e| anyhow!("plugin `{}`: default of `{}` is not RON: {e}", info.name, spec.name))?,
            };
            check(spec, &v).map_err(|e| anyhow!("plugin `{}`: {e}", info.name))?;
            values.insert(spec.name.clone(), v);
        }
        if let Some(k) = given.keys().next() {
            let known: Vec<&str> = info.options.iter().map(|o| o.name.as_str()).collect();
            bail!("plugin `{}` has no option `{k}` (options: {})", info.name, known.join(", "));
        }
        Ok(Self { values })
    }

    /// RON text of all values (what crosses the C ABI).
    pub fn to_ron(&self) -> String {
        ron::to_string(&self.values).unwrap_or_default()
    }

    /// Parses what [`Options::to_ron`] wrote, checked against `info`.
    pub fn from_ron(info: &PluginInfo, text: &str) -> Result<Self> {
        Self::parse(info, if text.trim().is_empty() { "" } else { text })
    }

    fn get(&self, name: &str) -> Result<&Value> {
        self.values.get(name).ok_or_else(|| anyhow!("no option `{name}`"))
    }

    /// A float option.
    pub fn float(&self, name: &str) -> Result<f64> {
        match self.get(name)? {
            Value::Number(n) => Ok(n.into_f64()),
            v => bail!("option `{name}` is {v:?}, not a number"),
        }
    }

    /// An integer option.
    pub fn int(&self, name: &str) -> Result<usize> {
        match self.get(name)? {
            Value::Number(n) => n
                .as_i64()
                .filter(|&i| i >= 0)
                .map(|i| i as usize)
                .ok_or_else(|| anyhow!("option `{name}` is not a non-negative integer")),
            v => bail!("option `{name}` is {v:?}, not an integer"),
        }
    }

    /// A boolean option.
    pub fn bool(&self, name: &str) -> Result<bool> {
        match self.get(name)? {
            Value::Bool(b) => Ok(*b),
            v => bail!("option `{name}` is {v:?}, not a bool"),
        }
    }

    /// A text or choice option.
    pub fn text(&self, name: &str) -> Result<&str> {
        match self.get(name)? {
            Value::String(s) => Ok(s),
            v => bail!("option `{name}` is {v:?}, not text"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> PluginInfo {
        PluginInfo {
            name: "t".into(),
            kind: PluginKind::Sampler,
            version: "1.0.0".into(),
            description: "test".into(),
            options: vec![
                OptionSpec::new("eta", OptionType::Float, "0.0", "noise"),
                OptionSpec::new(
                    "spacing",
                    OptionType::Choice(vec!["leading".into(), "trailing".into()]),
                    "\"leading\"",
                    "s",
                ),
                OptionSpec::new("k", OptionType::Int, "3", "k"),
            ],
        }
    }

    #[test]
    fn defaults_pairs_ron_and_errors() {
        let o = Options::parse(&info(), "").unwrap();
        assert_eq!((o.float("eta").unwrap(), o.text("spacing").unwrap(), o.int("k").unwrap()), (0.0, "leading", 3));
        let o = Options::parse(&info(), "eta=0.5, spacing=trailing").unwrap();
        assert_eq!((o.float("eta").unwrap(), o.text("spacing").unwrap()), (0.5, "trailing"));
        let o = Options::parse(&info(), "{\"k\": 7}").unwrap();
        assert_eq!(o.int("k").unwrap(), 7);
        assert_eq!(Options::from_ron(&info(), &o.to_ron()).unwrap(), o);
        assert!(Options::parse(&info(), "etta=1").unwrap_err().to_string().contains("no option `etta`"));
        assert!(Options::parse(&info(), "spacing=middle").is_err());
        assert!(Options::parse(&info(), "k=-1").is_err());
    }
}
