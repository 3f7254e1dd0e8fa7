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

/// A typed option value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OptionValue {
    /// A finite real number.
    Float(f64),
    /// A whole number ≥ 0.
    Int(usize),
    /// true / false.
    Bool(bool),
    /// Text, or one word of a choice.
    Text(String),
}

impl OptionValue {
    /// As a RON value (the text form of [`Options::to_ron`]).
    fn to_ron(&self) -> Value {
        match self {
            OptionValue::Float(x) => Value::Number((*x).into()),
            OptionValue::Int(n) => Value::Number((*n as i64).into()),
            OptionValue::Bool(b) => Value::Bool(*b),
            OptionValue::Text(t) => Value::String(t.clone()),
        }
    }

    /// Whether it is a value of type `ty`.
    fn fits(&self, ty: &OptionType) -> bool {
        match (ty, self) {
            (OptionType::Float, OptionValue::Float(x)) => x.is_finite(),
            (OptionType::Int, OptionValue::Int(_)) | (OptionType::Bool, OptionValue::Bool(_)) => true,
            (OptionType::Text, OptionValue::Text(_)) => true,
            (OptionType::Choice(c), OptionValue::Text(t)) => c.contains(t),
            _ => false,
        }
    }
}

impl std::fmt::Display for OptionValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OptionValue::Float(x) => write!(f, "{x:?}"),
            OptionValue::Int(n) => write!(f, "{n}"),
            OptionValue::Bool(b) => write!(f, "{b}"),
            OptionValue::Text(t) => f.write_str(t),
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
    /// Default, of type `ty` (the constructors make it so).
    pub default: OptionValue,
    /// One line saying what it does.
    pub doc: String,
}

impl OptionSpec {
    fn make(name: &str, ty: OptionType, default: OptionValue, doc: &str) -> Self {
        assert!(default.fits(&ty), "option `{name}`: default {default} is not a {ty}");
        Self { name: name.into(), ty, default, doc: doc.into() }
    }

    /// A real-number option.
    pub fn float(name: &str, default: f64, doc: &str) -> Self {
        Self::make(name, OptionType::Float, OptionValue::Float(default), doc)
    }

    /// A whole-number option (≥ 0).
    pub fn int(name: &str, default: usize, doc: &str) -> Self {
        Self::make(name, OptionType::Int, OptionValue::Int(default), doc)
    }

    /// A true/false option.
    pub fn bool(name: &str, default: bool, doc: &str) -> Self {
        Self::make(name, OptionType::Bool, OptionValue::Bool(default), doc)
    }

    /// A free-text option.
    pub fn text(name: &str, default: &str, doc: &str) -> Self {
        Self::make(name, OptionType::Text, OptionValue::Text(default.into()), doc)
    }

    /// One of `choices`; `default` must be one of them.
    pub fn choice(name: &str, choices: &[&str], default: &str, doc: &str) -> Self {
        let ty = OptionType::Choice(choices.iter().map(|c| c.to_string()).collect());
        Self::make(name, ty, OptionValue::Text(default.into()), doc)
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
    values: BTreeMap<String, OptionValue>,
}

/// The value `v` as an option of `spec`'s type, or an error naming the option.
fn check(spec: &OptionSpec, v: &Value) -> Result<OptionValue> {
    let typed = match (&spec.ty, v) {
        (OptionType::Float, Value::Number(n)) => Some(OptionValue::Float(n.into_f64())),
        (OptionType::Int, Value::Number(n)) => n.as_i64().filter(|&i| i >= 0).map(|i| OptionValue::Int(i as usize)),
        (OptionType::Bool, Value::Bool(b)) => Some(OptionValue::Bool(*b)),
        (OptionType::Text | OptionType::Choice(_), Value::String(s)) => Some(OptionValue::Text(s.clone())),
        _ => None,
    };
    match typed.filter(|t| t.fits(&spec.ty)) {
        Some(t) => Ok(t),
        None => {
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
                Some(v) => check(spec, &v).map_err(|e| anyhow!("plugin `{}`: {e}", info.name))?,
                None if spec.default.fits(&spec.ty) => spec.default.clone(),
                None => bail!("plugin `{}`: the default of `{}` is not a {}", info.name, spec.name, spec.ty),
            };
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
        let plain: BTreeMap<&String, Value> = self.values.iter().map(|(k, v)| (k, v.to_ron())).collect();
        ron::to_string(&plain).unwrap_or_default()
    }

    /// Parses what [`Options::to_ron`] wrote, checked against `info`.
    pub fn from_ron(info: &PluginInfo, text: &str) -> Result<Self> {
        Self::parse(info, if text.trim().is_empty() { "" } else { text })
    }

    fn get(&self, name: &str) -> Result<&OptionValue> {
        self.values.get(name).ok_or_else(|| anyhow!("no option `{name}`"))
    }

    /// A float option.
    pub fn float(&self, name: &str) -> Result<f64> {
        match self.get(name)? {
            OptionValue::Float(x) => Ok(*x),
            v => bail!("option `{name}` is {v:?}, not a number"),
        }
    }

    /// An integer option.
    pub fn int(&self, name: &str) -> Result<usize> {
        match self.get(name)? {
            OptionValue::Int(n) => Ok(*n),
            v => bail!("option `{name}` is {v:?}, not an integer"),
        }
    }

    /// A boolean option.
    pub fn bool(&self, name: &str) -> Result<bool> {
        match self.get(name)? {
            OptionValue::Bool(b) => Ok(*b),
            v => bail!("option `{name}` is {v:?}, not a bool"),
        }
    }

    /// A text or choice option.
    pub fn text(&self, name: &str) -> Result<&str> {
        match self.get(name)? {
            OptionValue::Text(s) => Ok(s),
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
                OptionSpec::float("eta", 0.0, "noise"),
                OptionSpec::choice("spacing", &["leading", "trailing"], "leading", "s"),
                OptionSpec::int("k", 3, "k"),
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

    /// Defaults are typed: each constructor takes a value of its type, and a
    /// choice's default must be one of its words.
    #[test]
    fn typed_defaults() {
        let i = info();
        assert_eq!(i.options[0].default, OptionValue::Float(0.0));
        assert_eq!(i.options[2].default.to_string(), "3");
        assert_eq!(OptionSpec::bool("b", true, "").default, OptionValue::Bool(true));
        assert_eq!(Options::parse(&i, "").unwrap().to_ron(), r#"{"eta":0.0,"k":3,"spacing":"leading"}"#);
        let bad = std::panic::catch_unwind(|| OptionSpec::choice("s", &["a", "b"], "c", ""));
        assert!(bad.is_err(), "a choice default outside its words is refused");
    }
}
