//! Reading and writing graph files (RON).
//!
//! Parsing errors are reported as `origin:line:col: message`, so editors and
//! terminals can jump to the spot. Unknown fields are rejected and the message
//! lists the fields that are allowed there. A parsed graph is then checked by
//! [`validate`] before it is returned.

use std::path::Path;

use ron::error::{Error as RonError, SpannedError};

use super::{validate::validate, Graph};

/// Parses and validates a graph from RON text.
///
/// `origin` names the source in error messages (usually the file path).
pub fn from_str(text: &str, origin: &str) -> anyhow::Result<Graph> {
    let graph: Graph = ron::from_str(text).map_err(|e| spanned_error(&e, origin))?;
    // One flat message, so `to_string()` alone shows every problem.
    validate(&graph).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
    Ok(graph)
}

/// Reads, parses and validates a graph file.
pub fn from_file(path: &Path) -> anyhow::Result<Graph> {
    let text = crate::util::fsx::read_input_string(path, "graph file")?;
    from_str(&text, &path.display().to_string())
}

/// Serializes a graph as pretty RON that [`from_str`] reads back unchanged.
pub fn to_ron(g: &Graph) -> String {
    let config = ron::ser::PrettyConfig::new().struct_names(false);
    // Serializing plain structs, strings, numbers and unit enums cannot fail.
    ron::ser::to_string_pretty(g, config).expect("a Graph always serializes to RON")
}

/// Formats a RON error as `origin:line:col: message`.
fn spanned_error(e: &SpannedError, origin: &str) -> anyhow::Error {
    let what = match &e.code {
        RonError::NoSuchStructField { expected, found, outer } => {
            let place = outer.as_ref().map(|o| format!(" in `{o}`")).unwrap_or_default();
            let allowed: Vec<String> = expected.iter().map(|f| format!("`{f}`")).collect();
            format!("unknown field `{found}`{place}; expected one of {}", allowed.join(", "))
        }
        other => other.to_string(),
    };
    let p = e.position;
    anyhow::anyhow!("{origin}:{}:{}: {what}", p.line, p.col)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::test_graph;
    use std::path::PathBuf;

    /// The shipped `graphs/` folder, next to this crate.
    fn graphs_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../graphs")
    }

    /// Sorted `*.ron` files directly inside `dir`.
    fn ron_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "ron"))
            .collect();
        files.sort();
        files
    }

    fn load_err(name: &str) -> String {
        let err = from_file(&graphs_dir().join("bad").join(name)).unwrap_err();
        err.to_string()
    }

    #[test]
    fn every_shipped_graph_loads_and_validates() {
        let files = ron_files(&graphs_dir());
        assert!(files.len() >= 13, "expected the shipped graphs, found {files:?}");
        for f in &files {
            let g = from_file(f).unwrap_or_else(|e| panic!("{}: {e:#}", f.display()));
            assert!(!g.name.is_empty(), "{}", f.display());
        }
        for name in ["fmnist-tiny.ron", "fmnist-w128-d4-p4.ron", "dit-xl-2.ron"] {
            assert!(files.iter().any(|f| f.ends_with(name)), "{name} is missing");
        }
    }

    #[test]
    fn every_bad_graph_fails() {
        let files = ron_files(&graphs_dir().join("bad"));
        assert!(files.len() >= 5);
        for f in files {
            assert!(from_file(&f).is_err(), "{} should not load", f.display());
        }
    }

    #[test]
    fn malformed_file_reports_file_line_col() {
        let msg = load_err("syntax.ron");
        assert!(msg.contains("bad/syntax.ron:13:5:"), "{msg}");
    }

    #[test]
    fn unknown_field_is_named_with_alternatives() {
        let msg = load_err("unknown-field.ron");
        assert!(msg.contains("unknown-field.ron:"), "{msg}");
        assert!(msg.contains("unknown field `mlp_ration`"), "{msg}");
        assert!(msg.contains("`mlp_ratio`"), "{msg}");
    }

    #[test]
    fn impossible_shapes_name_the_field() {
        let msg = load_err("heads-not-dividing.ron");
        assert!(msg.contains("hidden (100) is not divisible by heads (3)"), "{msg}");
        let msg = load_err("patch-not-dividing.ron");
        assert!(msg.contains("input.height (28) is not divisible by patch_size (3)"), "{msg}");
        let msg = load_err("zero-depth.ron");
        assert!(msg.contains("depth must be at least 1"), "{msg}");
        assert!(msg.contains("zero-depth.ron: graph `bad-zero-depth` has 1 problem(s)"), "{msg}");
    }

    #[test]
    fn readme_examples_load() {
        let readme = std::fs::read_to_string(graphs_dir().join("README.md")).unwrap();
        let blocks: Vec<&str> = readme.split("```ron\n").skip(1).collect();
        assert!(blocks.len() >= 2);
        for block in blocks {
            let text = block.split("```").next().unwrap();
            from_str(text, "README.md").unwrap();
        }
    }

    #[test]
    fn defaults_fill_optional_fields() {
        let text = "(name: \"m\", input: (channels: 1, height: 8, width: 8), patch_size: 2,
                     hidden: 16, depth: 1, heads: 2, conditioning: (num_classes: 3))";
        let g = from_str(text, "inline").unwrap();
        let mut expected = test_graph(1, 8, 2, 16, 1, 2);
        expected.name = "m".into();
        expected.conditioning.num_classes = 3;
        assert_eq!(g, expected);
    }

    #[test]
    fn to_ron_round_trips() {
        let mut g = test_graph(3, 32, 4, 48, 3, 4);
        g.mlp_ratio = 2.5;
        g.block.norm_eps = 1e-5;
        g.block.qkv_bias = false;
        let text = to_ron(&g);
        assert_eq!(from_str(&text, "round-trip").unwrap(), g, "{text}");
    }

    #[test]
    fn from_file_reads_a_temp_file_and_reports_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.ron");
        let g = test_graph(1, 28, 4, 32, 2, 2);
        std::fs::write(&path, to_ron(&g)).unwrap();
        assert_eq!(from_file(&path).unwrap(), g);
        let err = from_file(&dir.path().join("missing.ron")).unwrap_err();
        assert!(err.to_string().contains("missing.ron"), "{err}");
    }
}
