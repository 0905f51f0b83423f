//! Writes an image front to back: each extent at its place, zeros between. Nothing is
//! sought back to, so the image streams into any writer (the ISO is ~30 MiB, mostly file
//! data that is moved here, not copied).

use std::io::{self, Write};

/// An image: extents in ascending, non-overlapping byte order; the gaps are zeros.
pub(super) struct Image {
    pub extents: Vec<Extent>,
    /// Total bytes (zeros after the last extent up to here).
    pub len: u64,
}

/// Bytes at a byte offset.
pub(super) struct Extent {
    pub at: u64,
    pub data: Vec<u8>,
}

impl Image {
    pub fn write_to(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut pos = 0u64;
        for e in &self.extents {
            zeros_up_to(out, &mut pos, e.at)?;
            out.write_all(&e.data)?;
            pos += e.data.len() as u64;
        }
        zeros_up_to(out, &mut pos, self.len)
    }
}

/// Pads with zeros from `pos` to `to` (never backwards: that would be a layout bug).
fn zeros_up_to(out: &mut dyn Write, pos: &mut u64, to: u64) -> io::Result<()> {
    const Z: [u8; 4096] = [0; 4096];
    let mut n = to.checked_sub(*pos).ok_or_else(|| {
        io::Error::other(format!(
            "layout error: byte {to} is behind the write position {pos}"
        ))
    })?;
    while n > 0 {
        let k = n.min(Z.len() as u64) as usize;
        out.write_all(&Z[..k])?;
        n -= k as u64;
    }
    *pos = to;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(extents: &[(u64, &[u8])], len: u64) -> io::Result<Vec<u8>> {
        let image = Image {
            extents: extents
                .iter()
                .map(|&(at, data)| Extent {
                    at,
                    data: data.to_vec(),
                })
                .collect(),
            len,
        };
        let mut out = Vec::new();
        image.write_to(&mut out)?;
        Ok(out)
    }

    #[test]
    fn extents_land_at_their_offsets_and_overlaps_are_refused() {
        let out = written(&[(1, &[1, 2]), (5000, &[3])], 5003).unwrap();
        assert_eq!(out.len(), 5003);
        assert_eq!(&out[..4], &[0, 1, 2, 0]);
        assert_eq!(&out[4999..], &[0, 3, 0, 0]);

        let err = written(&[(0, &[1, 2]), (1, &[3])], 2).unwrap_err();
        assert!(err.to_string().contains("layout error"), "{err}");
    }
}
