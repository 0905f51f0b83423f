//! The agent certificate's fingerprint: the SHA-256 of its DER, the one thing a client
//! pins. Parsed once from text (the preset, `failback.fingerprint=`, `--fingerprint`,
//! the prompt) and written back as text. An operator typing it by hand at a BMC console
//! may give only its first hex digits: at least [`MIN_DIGITS`] (96 bits, far beyond a
//! certificate forged to match), in the groups `failback serve` prints.

use std::fmt;
use std::str::FromStr;

/// The fewest hex digits a fingerprint may be given with: 96 bits.
pub const MIN_DIGITS: usize = 24;

/// The SHA-256 of a certificate's DER, or its first `digits` hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// The digits known, from the first; the rest zero.
    sha256: [u8; 32],
    /// How many hex digits are known: [`MIN_DIGITS`] to 64.
    digits: u8,
}

impl Fingerprint {
    /// The fingerprint of the certificate whose DER has this SHA-256.
    pub const fn new(sha256: [u8; 32]) -> Self {
        Fingerprint { sha256, digits: 64 }
    }

    /// The fingerprint of the certificate `der`.
    pub fn of(der: &[u8]) -> Self {
        use sha2::{Digest, Sha256};
        Fingerprint::new(Sha256::digest(der).into())
    }

    /// Whether the certificate whose fingerprint is `cert` is the one pinned: its
    /// SHA-256 begins with every digit given.
    pub fn matches(&self, cert: &Fingerprint) -> bool {
        hex::encode(cert.sha256).starts_with(&self.to_string())
    }

    /// `sha256:` and the hex digits known (all 64 for a certificate's).
    pub fn printed(&self) -> String {
        format!("sha256:{self}")
    }

    /// The first [`MIN_DIGITS`] hex digits in groups of four, as a person types them
    /// (`e40c-b277-58bf-ec98-20c4-ed9a`): what `failback serve` shows first.
    pub fn grouped(&self) -> String {
        let text = self.to_string();
        let digits: Vec<&str> = (0..MIN_DIGITS.min(text.len()))
            .step_by(4)
            .map(|i| &text[i..(i + 4).min(text.len())])
            .collect();
        digits.join("-")
    }
}

impl From<[u8; 32]> for Fingerprint {
    fn from(sha256: [u8; 32]) -> Self {
        Fingerprint::new(sha256)
    }
}

/// Text that is not a fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error(
        "{0:?} is not a SHA-256 fingerprint: 64 hex digits (or the first {MIN_DIGITS} or more), as `failback serve` prints it"
    )]
    Form(String),
    #[error(
        "{0:?} is not a SHA-256 fingerprint: {1} hex digits are too few to pin a certificate; give at least the first {MIN_DIGITS} of the 64 hex digits `failback serve` prints (96 bits)"
    )]
    TooShort(String, usize),
}

/// Hex digits (either case), optionally after `sha256:`, with `:` or `-` between them
/// and blanks around: all 64 (the printed form, the form kept, the colon form of other
/// tools) or the first [`MIN_DIGITS`] or more (the grouped form `failback serve` shows).
impl FromStr for Fingerprint {
    type Err = Invalid;
    fn from_str(text: &str) -> Result<Self, Invalid> {
        let s = text.trim();
        let s = s
            .strip_prefix("sha256:")
            .or_else(|| s.strip_prefix("SHA256:"))
            .unwrap_or(s);
        let digits: String = s
            .chars()
            .filter(|c| !matches!(c, ':' | '-'))
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if digits.len() > 64 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Invalid::Form(text.to_string()));
        }
        if digits.len() < MIN_DIGITS {
            return Err(Invalid::TooShort(text.to_string(), digits.len()));
        }
        let mut padded = digits.clone();
        padded.push_str(&"0".repeat(64 - digits.len()));
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(padded, &mut sha256).map_err(|_| Invalid::Form(text.to_string()))?;
        Ok(Fingerprint {
            sha256,
            digits: digits.len() as u8,
        })
    }
}

/// The form kept in the preset and on the command line: the lowercase hex digits known.
impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.sha256)[..usize::from(self.digits)])
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Through the text form, as the preset holds it.
impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_the_kept_and_the_colon_forms_parse() {
        let bytes: [u8; 32] = core::array::from_fn(|i| i as u8 * 7);
        let f = Fingerprint::new(bytes);
        assert_eq!(f.printed(), format!("sha256:{}", hex::encode(bytes)));
        assert_eq!(f.printed().parse(), Ok(f));
        assert_eq!(f.to_string().parse(), Ok(f));
        assert_eq!(format!(" {} ", f.printed().to_uppercase()).parse(), Ok(f));
        let colons: Vec<String> = bytes.iter().map(|b| hex::encode_upper([*b])).collect();
        assert_eq!(colons.join(":").parse(), Ok(f));
        assert_eq!(
            Fingerprint::of(b"abc").to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn anything_else_is_refused_in_one_line() {
        for bad in [
            &"zz".repeat(32),
            &"ab".repeat(33),
            "e40c b277 58bf ec98 20c4 ed9a",
        ] {
            let e = bad.parse::<Fingerprint>().unwrap_err().to_string();
            assert!(
                e.contains("is not a SHA-256 fingerprint: 64 hex digits"),
                "{e}"
            );
        }
        assert_eq!(
            "abc".parse::<Fingerprint>().unwrap_err().to_string(),
            "\"abc\" is not a SHA-256 fingerprint: 3 hex digits are too few to pin a certificate; \
             give at least the first 24 of the 64 hex digits `failback serve` prints (96 bits)"
        );
        for short in ["", "sha256:abcd", "e40c-b277-58bf-ec98-20c4-ed9"] {
            assert!(
                matches!(short.parse::<Fingerprint>(), Err(Invalid::TooShort(..))),
                "{short}"
            );
        }
    }

    #[test]
    fn a_prefix_of_24_digits_or_more_pins_the_certificate_it_begins() {
        let cert = Fingerprint::of(b"a certificate");
        let full = cert.to_string();
        assert_eq!(cert.grouped().len(), 24 + 5);
        assert_eq!(cert.grouped().replace('-', ""), full[..24]);
        for given in [
            cert.grouped(),
            full[..24].to_uppercase(),
            full[..25].to_string(),
            full.clone(),
        ] {
            let pinned: Fingerprint = given.parse().unwrap();
            assert!(pinned.matches(&cert), "{given}");
            assert_eq!(pinned.to_string(), given.replace('-', "").to_lowercase());
            assert_eq!(pinned.to_string().parse(), Ok(pinned), "kept and read back");
        }
        // One digit off, anywhere in the prefix: another certificate.
        let mut other = full[..24].to_string();
        let last = if other.ends_with('0') { "1" } else { "0" };
        other.replace_range(23..24, last);
        assert!(!other.parse::<Fingerprint>().unwrap().matches(&cert));
        assert!(!Fingerprint::of(b"another").matches(&cert));
    }

    #[test]
    fn serde_goes_through_the_kept_form() {
        let f = Fingerprint::new([0xab; 32]);
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(json, format!("\"{}\"", "ab".repeat(32)));
        assert_eq!(serde_json::from_str::<Fingerprint>(&json).unwrap(), f);
        assert!(serde_json::from_str::<Fingerprint>("\"abc\"").is_err());
    }
}
