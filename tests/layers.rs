//! The source tree's layers import only downwards (DESIGN.md §2): primitives, then
//! platform (`net`, `disks`), sources, the engine (`mapping`, `report`, `sync`), config
//! (`config`, then `cmdline`, which overlays it), and the roles (`boot`, `build`,
//! `agent`). This test reads every file under src/ and fails on an import of a module
//! from its own layer or one above.

use std::collections::BTreeSet;
use std::path::Path;

/// Top-level modules, bottom up. A module may import only from lower ranks.
const LAYERS: &[(&str, u8)] = &[
    ("block", 0),
    ("parse", 0),
    ("fingerprint", 0),
    ("retry", 0),
    ("secret", 0),
    ("net", 1),
    ("disks", 1),
    ("source", 2),
    ("mapping", 3),
    ("report", 4),
    ("sync", 5),
    ("config", 6),
    ("cmdline", 7),
    ("boot", 8),
    ("build", 8),
    ("agent", 8),
];

fn rank(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

/// The top-level modules a file names as `crate::NAME` or inside `crate::{...}`.
fn imports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group: after `{` and after each `,` at depth 0.
            let mut depth = 0;
            let mut start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && !c.is_whitespace() => {
                        out.insert(ident(&group[i..]));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out.retain(|m| !m.is_empty());
    out
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_import_parser_sees_single_and_grouped_paths() {
    let text = "use crate::net::proxy;\nuse crate::{config::Aws, events::{Event, Tee},\n  source};\n\
                let x = crate::disks::discover(p);";
    let got: Vec<String> = imports(text).into_iter().collect();
    assert_eq!(got, ["config", "disks", "events", "net", "source"]);
}

#[test]
fn every_module_imports_only_from_the_layers_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    all.sort();
    let mut upward = BTreeSet::new();
    let mut unknown = Vec::new();
    for path in &all {
        let rel = path
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        // The crate root and the binary declare and dispatch: above every layer.
        if rel == "lib.rs" || rel == "main.rs" {
            continue;
        }
        let module = rel.split(['/', '.']).next().unwrap().to_string();
        let Some(own) = rank(&module) else {
            unknown.push(rel);
            continue;
        };
        let text = std::fs::read_to_string(path).unwrap();
        for imported in imports(&text) {
            if imported == module {
                continue;
            }
            match rank(&imported) {
                Some(r) if r < own => {}
                Some(_) => {
                    upward.insert((rel.clone(), imported));
                }
                None => unknown.push(format!("{rel} imports crate::{imported}")),
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "modules in no layer (add them to LAYERS as DESIGN.md §2 places them): {unknown:?}"
    );
    assert!(
        upward.is_empty(),
        "imports from the same layer or one above (move the shared piece down): {upward:?}"
    );
}
