//! The agent certificate's fingerprint: the SHA-256 of its DER, the one thing a client
//! pins. Parsed once from text (the preset, `failback.fingerprint=`, `--fingerprint`,
//! the prompt), kept as its 32 bytes, and written back as text.

use std::fmt;
use std::str::FromStr;

/// The SHA-256 of a certificate's DER.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of the certificate whose DER has this SHA-256.
    pub const fn new(sha256: [u8; 32]) -> Self {
        Fingerprint(sha256)
    }

    /// The fingerprint of the certificate `der`.
    pub fn of(der: &[u8]) -> Self {
        use sha2::{Digest, Sha256};
        Fingerprint(Sha256::digest(der).into())
    }

    /// The SHA-256 itself.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// As `failback serve` prints it: `sha256:` and the 64 lowercase hex digits.
    pub fn printed(&self) -> String {
        format!("sha256:{self}")
    }
}

impl From<[u8; 32]> for Fingerprint {
    fn from(sha256: [u8; 32]) -> Self {
        Fingerprint(sha256)
    }
}

/// Text that is not a fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a SHA-256 fingerprint: 64 hex digits, as `failback serve` prints it")]
pub struct Invalid(pub String);

/// 64 hex digits (either case), optionally after `sha256:` and with `:` between them,
/// blanks around: the printed form, the form kept, and the colon form of other tools.
impl FromStr for Fingerprint {
    type Err = Invalid;
    fn from_str(text: &str) -> Result<Self, Invalid> {
        let s = text.trim();
        let s = s
            .strip_prefix("sha256:")
            .or_else(|| s.strip_prefix("SHA256:"))
            .unwrap_or(s);
        let digits: String = s.chars().filter(|c| *c != ':').collect();
        let mut out = [0u8; 32];
        hex::decode_to_slice(digits, &mut out).map_err(|_| Invalid(text.to_string()))?;
        Ok(Fingerprint(out))
    }
}

/// The form kept in the preset and on the command line: 64 lowercase hex digits.
impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
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
        assert_eq!(f.as_bytes(), &bytes);
        assert_eq!(
            Fingerprint::of(b"abc").to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn anything_else_is_refused_in_one_line() {
        for bad in ["sha256:abcd", &"zz".repeat(32), "", &"ab".repeat(33)] {
            let e = bad.parse::<Fingerprint>().unwrap_err().to_string();
            assert!(
                e.contains("is not a SHA-256 fingerprint: 64 hex digits"),
                "{e}"
            );
        }
        assert_eq!(
            "abc".parse::<Fingerprint>().unwrap_err().to_string(),
            "\"abc\" is not a SHA-256 fingerprint: 64 hex digits, as `failback serve` prints it"
        );
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
