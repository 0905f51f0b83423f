//! What the settings types share: one shape of refusal, and the glue that lets serde
//! read and write a type through its text form (`parse` and `Display`).

/// Fails with a message naming what is wrong and what would be right.
pub fn invalid<T>(what: &str, value: &str, expected: &str) -> Result<T, String> {
    Err(format!("{value:?} is not {what}: {expected}"))
}

/// `TryFrom<String>` by `$parse` and `From<$name> for String` by `Display`, for
/// `#[serde(try_from = "String", into = "String")]`.
macro_rules! string_newtype {
    ($name:ident, $parse:expr) => {
        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                $parse(s)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.to_string()
            }
        }
    };
}
pub(crate) use string_newtype;
