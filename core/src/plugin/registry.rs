//! The plugin registry: built-ins plus the libraries the user named.

use super::dynlib;
use anyhow::{anyhow, bail, Context, Result};
use fine_plugin_api::{Plugin, PluginInfo, PluginKind, Sampler, Strategy};
use std::path::{Path, PathBuf};

/// Environment variable listing plugin files or folders, colon-separated.
pub const PATH_VAR: &str = "FINE_PLUGIN_PATH";

/// Where a plugin came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Statically linked into `fine`.
    Builtin,
    /// Loaded from this library.
    Path(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Builtin => f.write_str("built-in"),
            Source::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// One registered plugin.
pub struct Entry {
    /// What it says about itself.
    pub info: PluginInfo,
    /// Where it came from.
    pub source: Source,
    /// The instance.
    pub plugin: Plugin,
}

/// All plugins available to this process.
pub struct Registry {
    entries: Vec<Entry>,
    /// Things the user should know (name clashes, skipped files).
    pub notes: Vec<String>,
}

/// The per-user plugin folder: `$XDG_DATA_HOME/fine/plugins` or
/// `$HOME/.local/share/fine/plugins` — only from an absolute `XDG_DATA_HOME` or
/// `HOME` (an empty or relative one would make it a folder of the working
/// directory, which nobody named).
pub fn user_dir() -> Option<PathBuf> {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    let base = std::env::var_os("XDG_DATA_HOME")
        .and_then(absolute)
        .or_else(|| std::env::var_os("HOME").and_then(absolute).map(|h| h.join(".local/share")))?;
    Some(base.join("fine/plugins"))
}

fn is_library(p: &Path) -> bool {
    p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("so" | "dylib" | "dll"))
}

/// Library files named by `p`: the file itself, or the libraries directly inside a folder.
fn libraries_in(p: &Path) -> Result<Vec<PathBuf>> {
    if p.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(p)
            .map_err(|e| anyhow!("reading plugin folder {}: {e}", p.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_library(p))
            .collect();
        v.sort();
        Ok(v)
    } else if p.is_file() {
        Ok(vec![p.to_path_buf()])
    } else {
        bail!("plugin path {} does not exist", p.display())
    }
}

impl Registry {
    /// Only the statically linked plugins.
    pub fn builtins() -> Self {
        let mut r = Registry { entries: Vec::new(), notes: Vec::new() };
        for b in fine_plugin_api::builtins() {
            let plugin = (b.make)();
            r.add(Entry { info: plugin.info(), source: Source::Builtin, plugin });
        }
        r.entries.sort_by(|a, b| (a.info.kind as u8, &a.info.name).cmp(&(b.info.kind as u8, &b.info.name)));
        r
    }

    /// Built-ins, then `explicit` (`--plugin`), then `$FINE_PLUGIN_PATH`, then the
    /// per-user folder if it exists. A library the user named that fails to
    /// load is an error; one found in the per-user folder is a note.
    pub fn load(explicit: &[PathBuf]) -> Result<Self> {
        let mut r = Self::builtins();
        for p in explicit {
            for lib in libraries_in(p)? {
                r.load_one(&lib)?;
            }
        }
        if let Some(var) = std::env::var_os(PATH_VAR) {
            for p in std::env::split_paths(&var).filter(|p| !p.as_os_str().is_empty()) {
                for lib in libraries_in(&p).map_err(|e| e.context(format!("in ${PATH_VAR}")))? {
                    r.load_one(&lib).map_err(|e| e.context(format!("in ${PATH_VAR}")))?;
                }
            }
        }
        if let Some(dir) = user_dir().filter(|d| d.is_dir()) {
            for lib in libraries_in(&dir).unwrap_or_default() {
                if let Err(e) = r.load_one(&lib) {
                    r.notes.push(format!("skipped {}: {e:#}", lib.display()));
                }
            }
        }
        Ok(r)
    }

    /// Loads the library at `path` by its absolute path (never through the
    /// system's library search), after checking that it is a whole ELF/Mach-O/PE file.
    fn load_one(&mut self, path: &Path) -> Result<()> {
        let canonical = path.canonicalize().with_context(|| format!("plugin library {}", path.display()))?;
        if self.entries.iter().any(|e| e.source == Source::Path(canonical.clone())) {
            return Ok(()); // named twice
        }
        dynlib::check_file(&canonical)?;
        let plugin = dynlib::load(&canonical)?;
        self.add(Entry { info: plugin.info(), source: Source::Path(canonical), plugin });
        Ok(())
    }

    fn add(&mut self, e: Entry) {
        if let Some(first) = self.entries.iter().find(|x| x.info.name == e.info.name) {
            self.notes.push(format!(
                "plugin `{}` from {} has the same name as the {} one from {}; the first is used (rename it to use both)",
                e.info.name, e.source, first.info.kind, first.source
            ));
            return;
        }
        self.entries.push(e);
    }

    /// All plugins, built-ins first.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The plugin called `name`.
    pub fn get(&self, name: &str) -> Result<&Entry> {
        self.entries.iter().find(|e| e.info.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.entries.iter().map(|e| e.info.name.as_str()).collect();
            anyhow!("no plugin named `{name}` (available: {})", names.join(", "))
        })
    }

    fn names(&self, kind: PluginKind) -> String {
        self.entries.iter().filter(|e| e.info.kind == kind).map(|e| e.info.name.as_str()).collect::<Vec<_>>().join(", ")
    }

    /// The sampler called `name`.
    pub fn sampler(&self, name: &str) -> Result<&dyn Sampler> {
        match self.entries.iter().find(|e| e.info.name == name).map(|e| &e.plugin) {
            Some(Plugin::Sampler(s)) => Ok(s.as_ref()),
            Some(Plugin::Strategy(_)) => bail!("`{name}` is a strategy, not a sampler"),
            None => bail!("unknown sampler `{name}` (available: {})", self.names(PluginKind::Sampler)),
        }
    }

    /// The strategy called `name`.
    pub fn strategy(&self, name: &str) -> Result<&dyn Strategy> {
        match self.entries.iter().find(|e| e.info.name == name).map(|e| &e.plugin) {
            Some(Plugin::Strategy(s)) => Ok(s.as_ref()),
            Some(Plugin::Sampler(_)) => bail!("`{name}` is a sampler, not a strategy"),
            None => bail!("unknown strategy `{name}` (available: {})", self.names(PluginKind::Strategy)),
        }
    }
}
