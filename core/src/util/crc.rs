//! Checksums that make a damaged file an error instead of a different model:
//! CRC-32 of a file's tensor bytes and of its metadata strings.

use anyhow::{bail, Result};
use std::collections::BTreeMap;

/// Metadata key of the tensor-data checksum.
pub const DATA_KEY: &str = "crc32";
/// Metadata key of the metadata checksum.
pub const META_KEY: &str = "meta_crc32";

/// CRC-32 of the metadata (every key but the two checksums), key order.
pub fn of_meta<'a>(meta: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let sorted: BTreeMap<&String, &String> =
        meta.into_iter().filter(|(k, _)| k.as_str() != DATA_KEY && k.as_str() != META_KEY).collect();
    let mut h = crc32fast::Hasher::new();
    for (k, v) in sorted {
        h.update(k.as_bytes());
        h.update(&[0]);
        h.update(v.as_bytes());
        h.update(&[0]);
    }
    format!("{:08x}", h.finalize())
}

/// Checks `meta`'s stored metadata checksum, if it has one (files written
/// before it was added have none).
pub fn check_meta<'a>(meta: impl IntoIterator<Item = (&'a String, &'a String)> + Clone) -> Result<()> {
    let stored = meta.clone().into_iter().find(|(k, _)| k.as_str() == META_KEY).map(|(_, v)| v.clone());
    if let Some(stored) = stored {
        let computed = of_meta(meta);
        if stored != computed {
            bail!("metadata checksum mismatch (stored {stored}, computed {computed}): the file is corrupted");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_value_or_key_is_caught() {
        let mut m: BTreeMap<String, String> = [("a", "1"), ("b", "xy")].map(|(k, v)| (k.into(), v.into())).into();
        m.insert(META_KEY.into(), of_meta(&m));
        check_meta(&m).unwrap();
        let mut bad = m.clone();
        bad.insert("b".into(), "xz".into());
        assert!(check_meta(&bad).unwrap_err().to_string().contains("metadata checksum mismatch"));
        let mut bad = m.clone();
        let v = bad.remove("a").unwrap();
        bad.insert("c".into(), v);
        assert!(check_meta(&bad).is_err());
        // Key/value boundaries count: ("a","b1") is not ("ab","1").
        let x: BTreeMap<String, String> = [("a".to_string(), "b1".to_string())].into();
        let y: BTreeMap<String, String> = [("ab".to_string(), "1".to_string())].into();
        assert_ne!(of_meta(&x), of_meta(&y));
        m.remove(META_KEY);
        check_meta(&m).unwrap(); // an older file without one
    }
}
