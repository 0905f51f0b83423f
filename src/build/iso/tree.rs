//! The file tree: Rock Ridge names, their ISO 9660 level 1 identifiers, and the orders
//! ECMA-119 wants (records by identifier, directories by level for the path tables).
//! Sectors are filled in by the layout.

use super::error::IsoError;

/// The files and directories of the image. Index 0 of `dirs` is the root; files keep the
/// order they were added in (the order of their data on the medium).
pub(super) struct Tree {
    pub dirs: Vec<DirNode>,
    pub files: Vec<FileNode>,
}

pub(super) struct DirNode {
    /// Rock Ridge name ("" for the root).
    pub name: String,
    /// ISO 9660 identifier.
    pub ident: Vec<u8>,
    pub parent: usize,
    pub subdirs: Vec<usize>,
    pub files: Vec<usize>,
    /// Laid out: first sector and size in bytes.
    pub lba: u32,
    pub size: u32,
}

pub(super) struct FileNode {
    pub name: String,
    pub ident: Vec<u8>,
    pub data: Vec<u8>,
    /// Laid out: first sector.
    pub lba: u32,
}

/// A directory's entry: a subdirectory or a file, by index.
#[derive(Debug, Clone, Copy)]
pub(super) enum Entry {
    Dir(usize),
    File(usize),
}

impl Tree {
    pub fn new() -> Self {
        Self {
            dirs: vec![DirNode {
                name: String::new(),
                ident: vec![0],
                parent: 0,
                subdirs: vec![],
                files: vec![],
                lba: 0,
                size: 0,
            }],
            files: vec![],
        }
    }

    /// Adds a file at `path` ("a/b/name"), making its directories.
    pub fn add(&mut self, path: &str, data: Vec<u8>) -> Result<usize, IsoError> {
        let (dir_path, name) = path.rsplit_once('/').unwrap_or(("", path));
        let mut dir = 0;
        for part in dir_path.split('/').filter(|p| !p.is_empty()) {
            dir = match self.dirs[dir]
                .subdirs
                .iter()
                .find(|&&d| self.dirs[d].name == part)
            {
                Some(&d) => d,
                None => {
                    let ident = iso_dir_ident(part);
                    self.check_clash(dir, &ident)?;
                    self.dirs.push(DirNode {
                        name: part.to_string(),
                        ident,
                        parent: dir,
                        subdirs: vec![],
                        files: vec![],
                        lba: 0,
                        size: 0,
                    });
                    let d = self.dirs.len() - 1;
                    self.dirs[dir].subdirs.push(d);
                    d
                }
            };
        }
        let ident = iso_file_ident(name);
        self.check_clash(dir, &ident)?;
        self.files.push(FileNode {
            name: name.to_string(),
            ident,
            data,
            lba: 0,
        });
        let f = self.files.len() - 1;
        self.dirs[dir].files.push(f);
        Ok(f)
    }

    /// Level 1 names are short: two Rock Ridge names may squeeze into one identifier.
    fn check_clash(&self, dir: usize, ident: &[u8]) -> Result<(), IsoError> {
        let d = &self.dirs[dir];
        let clash = d.subdirs.iter().any(|&s| self.dirs[s].ident == ident)
            || d.files.iter().any(|&f| self.files[f].ident == ident);
        if clash {
            Err(IsoError::NameClash(
                String::from_utf8_lossy(ident).into_owned(),
            ))
        } else {
            Ok(())
        }
    }

    /// ECMA-119 9.3: a directory's records ordered by identifier ("." and ".." go first,
    /// added by the records).
    pub fn entries(&self, dir: usize) -> Vec<Entry> {
        let d = &self.dirs[dir];
        let mut v: Vec<Entry> = d
            .subdirs
            .iter()
            .map(|&s| Entry::Dir(s))
            .chain(d.files.iter().map(|&f| Entry::File(f)))
            .collect();
        v.sort_by_key(|e| self.sort_key(*e));
        v
    }

    fn sort_key(&self, e: Entry) -> (Vec<u8>, Vec<u8>) {
        let ident = match e {
            Entry::Dir(d) => &self.dirs[d].ident,
            Entry::File(f) => &self.files[f].ident,
        };
        let stem = ident.split(|&b| b == b';').next().unwrap_or(ident);
        match stem.iter().position(|&b| b == b'.') {
            Some(dot) => (stem[..dot].to_vec(), stem[dot + 1..].to_vec()),
            None => (stem.to_vec(), vec![]),
        }
    }

    /// Directories in path table order (ECMA-119 6.9.1): by level, then parent, then name.
    pub fn path_table_order(&self) -> Vec<usize> {
        let mut order = vec![0];
        let mut i = 0;
        while i < order.len() {
            let d = order[i];
            for e in self.entries(d) {
                if let Entry::Dir(s) = e {
                    order.push(s);
                }
            }
            i += 1;
        }
        order
    }
}

/// ECMA-119 7.5/7.6, level 1: 8.3 uppercase d-characters, files with ";1".
fn d_chars(s: &str, max: usize) -> Vec<u8> {
    let mut v: Vec<u8> = s
        .bytes()
        .map(|b| match b.to_ascii_uppercase() {
            c @ (b'A'..=b'Z' | b'0'..=b'9' | b'_') => c,
            _ => b'_',
        })
        .take(max)
        .collect();
    if v.is_empty() {
        v.push(b'_');
    }
    v
}

fn iso_dir_ident(name: &str) -> Vec<u8> {
    d_chars(name, 8)
}

fn iso_file_ident(name: &str) -> Vec<u8> {
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s, e),
        _ => (name, ""),
    };
    let mut v = d_chars(stem, 8);
    v.push(b'.');
    if !ext.is_empty() {
        v.extend(d_chars(ext, 3));
    }
    v.extend_from_slice(b";1");
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_names_are_level_1() {
        assert_eq!(iso_file_ident("isolinux.bin"), b"ISOLINUX.BIN;1");
        assert_eq!(iso_file_ident("vmlinuz"), b"VMLINUZ.;1");
        assert_eq!(iso_file_ident("initrd.img"), b"INITRD.IMG;1");
        assert_eq!(iso_dir_ident(".disk"), b"_DISK");
    }
}
