//! Where a run came from: which strategy parameterized it, which learngene or
//! run it started from, what its initialization phase did. Carried by the
//! trainer into every checkpoint, where each field is the metadata key
//! `extra.<field>` (the keys checkpoints have always used, so every checkpoint
//! reads with or without this type; keys it does not know are kept in `other`).

use anyhow::{anyhow, Result};
use std::collections::BTreeMap;

/// The provenance of a run; every field is optional (a plain `fine train` run has none).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Provenance {
    /// The strategy that parameterized the run: an ancestry's (`fine pretrain`)
    /// or a descendant's (`fine init`).
    pub strategy: Option<String>,
    /// That strategy's version.
    pub strategy_version: Option<String>,
    /// An ancestry's strategy options (RON, `Options::to_ron`).
    pub strategy_opts: Option<String>,
    /// The learngene file a descendant was built from.
    pub learngene: Option<String>,
    /// Steps of a descendant's initialization phase (0: none).
    pub init_steps: Option<usize>,
    /// Values its initialization phase trained.
    pub init_trainable: Option<usize>,
    /// Wall time of building and initializing the descendant, seconds.
    pub init_seconds: Option<f64>,
    /// The run folder whose weights this run started from (`fine train --from`).
    pub from: Option<String>,
    /// The pool member a distillation run trains (`fine learngene extract`).
    pub pool_member: Option<String>,
    /// Keys this version does not know, as they were.
    pub other: BTreeMap<String, String>,
}

impl Provenance {
    /// The provenance of an ancestry of `strategy` (`version`) with options `opts` (RON).
    pub fn ancestry(strategy: &str, version: &str, opts: String) -> Self {
        Provenance {
            strategy: Some(strategy.into()),
            strategy_version: Some(version.into()),
            strategy_opts: Some(opts),
            ..Default::default()
        }
    }

    /// As metadata text: field name → value, the fields that are set.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        let mut m = self.other.clone();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                m.insert(k.to_string(), v);
            }
        };
        put("strategy", self.strategy.clone());
        put("strategy_version", self.strategy_version.clone());
        put("strategy_opts", self.strategy_opts.clone());
        put("learngene", self.learngene.clone());
        put("init_steps", self.init_steps.map(|n| n.to_string()));
        put("init_trainable", self.init_trainable.map(|n| n.to_string()));
        put("init_seconds", self.init_seconds.map(|s| format!("{s:.3}")));
        put("from", self.from.clone());
        put("pool_member", self.pool_member.clone());
        m
    }

    /// From metadata text ([`Self::to_map`]); a number that does not parse is
    /// an error naming its key.
    pub fn from_map(mut m: BTreeMap<String, String>) -> Result<Self> {
        fn num<T: std::str::FromStr>(m: &mut BTreeMap<String, String>, k: &str) -> Result<Option<T>> {
            m.remove(k).map(|v| v.parse().map_err(|_| anyhow!("provenance `{k}` = `{v}` is not a number"))).transpose()
        }
        Ok(Provenance {
            strategy: m.remove("strategy"),
            strategy_version: m.remove("strategy_version"),
            strategy_opts: m.remove("strategy_opts"),
            learngene: m.remove("learngene"),
            init_steps: num(&mut m, "init_steps")?,
            init_trainable: num(&mut m, "init_trainable")?,
            init_seconds: num(&mut m, "init_seconds")?,
            from: m.remove("from"),
            pool_member: m.remove("pool_member"),
            other: m,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field survives the metadata text; unknown keys are kept; the text
    /// keys are the ones checkpoints written before this type hold.
    #[test]
    fn round_trips_through_metadata_text() {
        let p = Provenance {
            strategy: Some("fine".into()),
            strategy_version: Some("0.1.0".into()),
            strategy_opts: Some("{}".into()),
            learngene: Some("lg.safetensors".into()),
            init_steps: Some(300),
            init_trainable: Some(1234),
            init_seconds: Some(1.5),
            from: Some("runs/a".into()),
            pool_member: Some("d3".into()),
            other: BTreeMap::from([("note".to_string(), "kept".to_string())]),
        };
        let m = p.to_map();
        assert_eq!(m["init_steps"], "300");
        assert_eq!(m["init_seconds"], "1.500");
        assert_eq!(m.len(), 10);
        assert_eq!(Provenance::from_map(m).unwrap(), p);
        let old = BTreeMap::from([("strategy".to_string(), "tleg".to_string())]);
        assert_eq!(Provenance::from_map(old).unwrap().strategy.as_deref(), Some("tleg"));
        let bad = BTreeMap::from([("init_steps".to_string(), "many".to_string())]);
        let e = Provenance::from_map(bad).unwrap_err().to_string();
        assert!(e.contains("init_steps") && e.contains("many"), "{e}");
        assert!(Provenance::default().to_map().is_empty());
    }
}
