//! Instance names: valid hostnames, and friendly random ones when the user gives none.

/// Why a name is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid instance name \"{name}\": {reason}")]
pub struct NameError {
    pub name: String,
    pub reason: &'static str,
}

/// Check that `name` can be a hostname: 1-63 characters of `a-z`, `0-9` and `-`, not
/// starting with a digit or `-`, not ending with `-`.
pub fn validate(name: &str) -> Result<(), NameError> {
    let err = |reason| {
        Err(NameError {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return err("must not be empty");
    }
    if name.len() > 63 {
        return err("must be at most 63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return err("only lowercase letters, digits and '-' are allowed");
    }
    if name.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
        return err("must not start with a digit or '-'");
    }
    if name.ends_with('-') {
        return err("must not end with '-'");
    }
    Ok(())
}

const ADJECTIVES: &[&str] = &[
    "able", "bold", "brave", "calm", "clever", "eager", "fair", "fast", "gentle", "happy", "keen",
    "kind", "lively", "lucky", "merry", "neat", "noble", "proud", "quick", "quiet", "sharp", "shy",
    "smart", "steady", "sunny", "swift", "tidy", "vivid", "warm", "wise",
];
const NOUNS: &[&str] = &[
    "badger", "bison", "crane", "dingo", "eagle", "falcon", "ferret", "gecko", "heron", "ibis",
    "jackal", "koala", "lemur", "lynx", "marten", "newt", "ocelot", "otter", "panda", "puffin",
    "quail", "raven", "seal", "stoat", "tapir", "tern", "vole", "walrus", "yak", "zebra",
];

/// A random `adjective-noun` name (always valid).
pub fn random() -> String {
    let b = uuid::Uuid::new_v4().into_bytes();
    let a = ADJECTIVES[usize::from(b[0]) % ADJECTIVES.len()];
    let n = NOUNS[usize::from(b[1]) % NOUNS.len()];
    format!("{a}-{n}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_of_names() {
        let cases: &[(&str, bool)] = &[
            ("c1", true),
            ("a", true),
            ("web-01", true),
            (&"a".repeat(63), true),
            ("", false),
            (&"a".repeat(64), false),
            ("1abc", false),
            ("-abc", false),
            ("abc-", false),
            ("Abc", false),
            ("a_b", false),
            ("a.b", false),
            ("a b", false),
            ("ä", false),
            ("../x", false),
        ];
        for (name, ok) in cases {
            assert_eq!(validate(name).is_ok(), *ok, "{name:?}");
        }
        assert_eq!(
            validate("abc-").err().map(|e| e.to_string()),
            Some("invalid instance name \"abc-\": must not end with '-'".to_string())
        );
    }

    #[test]
    fn random_names_are_valid() {
        for _ in 0..100 {
            let n = random();
            assert!(validate(&n).is_ok(), "{n}");
        }
    }
}
