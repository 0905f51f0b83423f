//! Faults between client and agent: a TCP proxy that drops, stalls, flips bytes and
//! slows the wire, and the watch that checks a pull's target meanwhile never holds
//! anything but the old or the new content of each block.

use super::data::{BS, Rng, block_hashes};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Faults the proxy injects into the agent -> client direction.
#[derive(Clone, Copy, Default)]
pub struct Faults {
    /// Probability, per 16 KiB chunk, of cutting the connection.
    pub drop: f64,
    /// Probability, per chunk, of stalling for `stall`.
    pub stall: f64,
    pub stall_for: Duration,
    /// Probability, per chunk, of flipping one byte.
    pub flip: f64,
    /// Bytes per second per connection (0 = unlimited).
    pub rate: u64,
}

/// A TCP proxy on 127.0.0.1 that injects [`Faults`]; stops on drop.
pub struct Proxy {
    pub port: u16,
    stop: Arc<AtomicBool>,
    pub drops: Arc<AtomicU64>,
    pub stalls: Arc<AtomicU64>,
    pub flips: Arc<AtomicU64>,
}

impl Proxy {
    pub fn start(upstream: u16, faults: Faults, seed: u64) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (drops, stalls, flips) = Default::default();
        let p = Proxy {
            port,
            stop: stop.clone(),
            drops,
            stalls,
            flips,
        };
        let counters = (p.drops.clone(), p.stalls.clone(), p.flips.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                n += 1;
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue; // agent down: the client sees a closed connection
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pump(c2, s2, Faults::default(), 0, None));
                let counters = counters.clone();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    pump(
                        server,
                        client,
                        faults,
                        seed ^ (n * 7919),
                        Some((counters, stop)),
                    )
                });
            }
        });
        p
    }

    /// Where a client reaches the agent through the proxy.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

type Counters = (Arc<AtomicU64>, Arc<AtomicU64>, Arc<AtomicU64>);

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    f: Faults,
    seed: u64,
    counters: Option<(Counters, Arc<AtomicBool>)>,
) {
    let mut rng = Rng::new(seed);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(((drops, stalls, flips), stop)) = &counters {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if rng.chance(f.drop) {
                drops.fetch_add(1, Ordering::Relaxed);
                break;
            }
            if rng.chance(f.stall) {
                stalls.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(f.stall_for);
            }
            if rng.chance(f.flip) {
                flips.fetch_add(1, Ordering::Relaxed);
                let i = rng.below(n as u64) as usize;
                buf[i] ^= 1 << rng.below(8);
            }
            if f.rate > 0 {
                std::thread::sleep(Duration::from_secs_f64(n as f64 / f.rate as f64));
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// Watches `target` while a pull runs: every block must always hold either its old
/// or its new content. A block read that matches neither is read again after a
/// moment (a read racing a 512 KiB write can see part of each); if it still matches
/// neither, the writer put something else there and the watch fails.
pub struct Watch {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Result<u64, String>>>,
}

impl Watch {
    pub fn start(target: &Path, old: &[u8], new: &[u8]) -> Watch {
        let old = block_hashes(old);
        let new = block_hashes(new);
        let target = target.to_path_buf();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            use std::os::unix::fs::FileExt;
            let f = std::fs::File::open(&target).unwrap();
            let mut buf = vec![0u8; BS];
            let mut scans = 0u64;
            while !s.load(Ordering::Relaxed) {
                for i in 0..old.len() {
                    let ok = |buf: &mut Vec<u8>| {
                        let n = f.read_at(buf, (i * BS) as u64).unwrap();
                        let h: [u8; 32] = Sha256::digest(&buf[..n]).into();
                        h == old[i] || h == new[i]
                    };
                    if !ok(&mut buf) {
                        std::thread::sleep(Duration::from_millis(30));
                        if !ok(&mut buf) {
                            return Err(format!(
                                "block {i} holds neither its old nor its new content"
                            ));
                        }
                    }
                }
                scans += 1;
            }
            Ok(scans)
        });
        Watch {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops watching; returns how many full scans were made, or the violation.
    pub fn finish(mut self) -> Result<u64, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}
