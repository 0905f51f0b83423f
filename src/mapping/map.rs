//! `--map`: which local target receives which remote volume.
//! Forms: `NAME=TARGET`, `NAME=EXCLUDE`, DRS-style lists `a=/dev/sda,b=EXCLUDE`, and
//! JSON objects `{"a":"/dev/sda","b":"EXCLUDE"}`; several `--map` add up. A target is a
//! path or a stable name ([`Selector`]: `serial:`, `wwn:`, `path:`).

use super::select::{self, Selector};
use crate::disks::Disk;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where one remote volume goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapTo {
    Target(Selector),
    Exclude,
}

impl MapTo {
    /// A target given by its path.
    pub fn path(path: impl Into<PathBuf>) -> MapTo {
        MapTo::Target(Selector::Path(path.into()))
    }
}

/// As `--map` takes it: the target, or `EXCLUDE`.
impl std::fmt::Display for MapTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MapTo::Target(target) => write!(f, "{target}"),
            MapTo::Exclude => f.write_str("EXCLUDE"),
        }
    }
}

/// The mapping, by remote volume name.
pub type Mapping = BTreeMap<String, MapTo>;

/// Why a `--map` value was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--map '{0}' is not NAME=TARGET, NAME=EXCLUDE or a JSON object")]
    Form(String),
    #[error("--map names volume '{0}' twice: give each volume one target")]
    Twice(String),
}

/// Parses every `--map` value into one mapping.
pub fn parse(values: &[String]) -> Result<Mapping, Error> {
    let mut map = Mapping::new();
    let mut add = |name: &str, to: &str, raw: &str| -> Result<(), Error> {
        let (name, to) = (name.trim(), to.trim());
        // A name opening with `{` would read back as JSON (`a=x,{b=y` written first).
        if name.is_empty() || to.is_empty() || name.starts_with('{') {
            return Err(Error::Form(raw.to_string()));
        }
        let to = if to == "EXCLUDE" {
            MapTo::Exclude
        } else {
            MapTo::Target(Selector::parse(to))
        };
        if map.insert(name.to_string(), to).is_some() {
            return Err(Error::Twice(name.to_string()));
        }
        Ok(())
    };
    for raw in values {
        let v = raw.trim();
        if v.starts_with('{') {
            let Pairs(pairs) = serde_json::from_str(v).map_err(|_| Error::Form(raw.clone()))?;
            for (name, to) in &pairs {
                add(name, to, raw)?;
            }
        } else {
            for pair in v.split(',').filter(|p| !p.trim().is_empty()) {
                let (name, to) = pair
                    .split_once('=')
                    .ok_or_else(|| Error::Form(raw.clone()))?;
                add(name, to, raw)?;
            }
        }
    }
    Ok(map)
}

/// The mapping with every stable name replaced by the path of the one disk among `disks`
/// (under `dev_dir`) it matches.
pub fn resolve(
    mapping: &Mapping,
    disks: &[Disk],
    dev_dir: &Path,
) -> Result<Mapping, select::Error> {
    mapping
        .iter()
        .map(|(volume, to)| {
            let to = match to {
                MapTo::Target(target) => MapTo::path(target.resolve(disks, dev_dir)?),
                MapTo::Exclude => MapTo::Exclude,
            };
            Ok((volume.clone(), to))
        })
        .collect()
}

/// A JSON object's members in order, repeats kept (a map would keep only the
/// last of a name given twice, silently).
struct Pairs(Vec<(String, String)>);

impl<'de> serde::Deserialize<'de> for Pairs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Pairs;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of strings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Pairs, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = m.next_entry()? {
                    pairs.push(pair);
                }
                Ok(Pairs(pairs))
            }
        }
        d.deserialize_map(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_forms_add_up() {
        let m = parse(&[
            "root=/dev/sda".into(),
            "data=/tmp/x.img,logs=EXCLUDE".into(),
            r#"{"extra":"/dev/nvme1n1","scratch":"EXCLUDE"}"#.into(),
        ])
        .unwrap();
        assert_eq!(m["root"], MapTo::path("/dev/sda"));
        assert_eq!(m["data"], MapTo::path("/tmp/x.img"));
        assert_eq!(m["logs"], MapTo::Exclude);
        assert_eq!(m["extra"], MapTo::path("/dev/nvme1n1"));
        assert_eq!(m["scratch"], MapTo::Exclude);
        assert_eq!(m.len(), 5);
    }

    #[test]
    fn bad_forms_and_repeats_are_refused() {
        assert!(matches!(parse(&["root".into()]), Err(Error::Form(_))));
        assert!(matches!(parse(&["=x".into()]), Err(Error::Form(_))));
        assert!(matches!(parse(&[",{a=/x".into()]), Err(Error::Form(_))));
        assert!(matches!(parse(&["{not json".into()]), Err(Error::Form(_))));
        assert!(matches!(
            parse(&["a=/x".into(), r#"{"a":"/y"}"#.into()]),
            Err(Error::Twice(n)) if n == "a"
        ));
        // Within one JSON object too, as within one DRS-style list.
        assert!(matches!(
            parse(&[r#"{"a":"/x","b":"EXCLUDE","a":"/y"}"#.into()]),
            Err(Error::Twice(n)) if n == "a"
        ));
        assert!(matches!(parse(&["a=/x,a=/y".into()]), Err(Error::Twice(n)) if n == "a"));
    }
}
