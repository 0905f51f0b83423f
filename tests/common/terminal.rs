//! A serial console's bytes as a person's terminal shows them: pyte (a VT100/xterm
//! emulator, in the tests' venv) renders them on a screen of the given size, so cursor
//! moves, resets and line-wrap modes count as they would in tmux or a BMC's console.

use super::venv_python;
use std::io::Write;
use std::process::{Command, Stdio};

/// Feeds stdin to a pyte screen of argv[1] x argv[2] and prints its rows as JSON.
const RENDER: &str = "
import json, sys, pyte
screen = pyte.Screen(int(sys.argv[1]), int(sys.argv[2]))
pyte.ByteStream(screen).feed(sys.stdin.buffer.read())
print(json.dumps(screen.display))
";

/// A rendered screen: `rows` of exactly `cols` characters each.
pub struct Terminal {
    pub rows: Vec<String>,
}

impl Terminal {
    /// `bytes` rendered on a `cols` x `lines` terminal.
    pub fn render(bytes: impl AsRef<[u8]>, cols: usize, lines: usize) -> Terminal {
        let mut child = Command::new(venv_python())
            .args(["-c", RENDER, &cols.to_string(), &lines.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run the venv's python");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(bytes.as_ref())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "pyte failed (scripts/moto-venv.sh installs it): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Terminal {
            rows: serde_json::from_slice(&out.stdout).unwrap(),
        }
    }

    /// Whether a row reads exactly `text` (trailing blanks aside).
    pub fn has_row(&self, text: &str) -> bool {
        self.rows.iter().any(|r| r.trim_end() == text)
    }

    /// How many rows contain `text`.
    pub fn rows_containing(&self, text: &str) -> usize {
        self.rows.iter().filter(|r| r.contains(text)).count()
    }

    /// Whether `text` reads whole, wrapped over as many rows as it needs (a terminal
    /// with line wrap off would keep overwriting its last column instead).
    pub fn shows_whole(&self, text: &str) -> bool {
        self.rows.concat().contains(text)
    }

    /// The screen as a person sees it, for failure messages.
    pub fn show(&self) -> String {
        self.rows
            .iter()
            .map(|r| format!("|{}\n", r.trim_end()))
            .collect()
    }
}
