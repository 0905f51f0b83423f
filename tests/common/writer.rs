//! A steady writer: a thread that keeps changing a served image while continuous
//! passes pull it, so that each pass has something new to bring.

use super::data::Rng;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::Duration;

/// A thread writing 4 KiB of seeded random bytes at random places of a file; stop it
/// with [`Writer::stop`].
pub struct Writer {
    writing: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

impl Writer {
    /// Starts writing to `path` past byte `from`, once every `every`, `seed` choosing
    /// what and where.
    pub fn start(path: &Path, from: u64, seed: u64, every: Duration) -> Writer {
        let writing = Arc::new(AtomicBool::new(true));
        let thread = {
            let (writing, path) = (writing.clone(), path.to_path_buf());
            std::thread::spawn(move || {
                let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
                let size = file.metadata().unwrap().len();
                let mut rng = Rng::new(seed);
                let mut writes = 0;
                while writing.load(Relaxed) {
                    let mut buf = vec![0u8; 4096];
                    rng.fill(&mut buf);
                    let at = from + rng.below(size - from - 4096);
                    file.write_all_at(&buf, at).unwrap();
                    writes += 1;
                    std::thread::sleep(every);
                }
                file.sync_all().unwrap();
                writes
            })
        };
        Writer { writing, thread }
    }

    /// Stops the writer once its current write is done and synced; returns how many
    /// writes it made.
    pub fn stop(self) -> u64 {
        self.writing.store(false, Relaxed);
        self.thread.join().unwrap()
    }
}
