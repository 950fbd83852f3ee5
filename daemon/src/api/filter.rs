//! `filter=` on collection endpoints (the Incus/LXD `api_filtering` extension): expressions
//! like `name eq c1`, `status eq Running and config.image.os eq BusyBox`,
//! `not name eq "web-1" or name ne db` over the JSON the endpoint returns. Field paths are
//! dot-separated; a map key that contains dots (`config.image.os`) is matched as a whole.
//! `and` binds tighter than `or`; comparisons are `eq` and `ne`. As in LXD and Incus, a
//! string field is matched against the value as a case-insensitive regular expression,
//! anchored at both ends unless the value holds `^` or `$` (web UIs send
//! `name eq (^$|^.*)`); other fields compare as text.

use serde_json::Value;

/// A parsed filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    Compare {
        field: String,
        equal: bool,
        value: Pattern,
        negate: bool,
    },
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
}

/// The value of a comparison, with the regular expression it stands for.
#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    re: regex::Regex,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Pattern {}

/// Largest compiled pattern: bounds what one request can make the daemon build.
const MAX_PATTERN_BYTES: usize = 1 << 20;

impl Pattern {
    fn new(text: &str) -> Result<Pattern, String> {
        let anchored = if text.contains('^') || text.contains('$') {
            text.to_string()
        } else {
            format!("^(?:{text})$")
        };
        let re = regex::RegexBuilder::new(&anchored)
            .case_insensitive(true)
            .size_limit(MAX_PATTERN_BYTES)
            .build()
            .map_err(|e| format!("invalid pattern \"{text}\": {e}"))?;
        Ok(Pattern {
            text: text.to_string(),
            re,
        })
    }

    fn matches(&self, v: Option<&Value>) -> bool {
        match v {
            Some(Value::String(s)) => self.re.is_match(s),
            Some(Value::Null) | None => self.re.is_match(""),
            Some(other) => other.to_string().eq_ignore_ascii_case(&self.text),
        }
    }
}

fn tokens(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' || c == '\'' {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next() {
                    Some(q) if q == c => break,
                    Some(x) => s.push(x),
                    None => return Err("unterminated quote".into()),
                }
            }
            out.push(s);
        } else {
            let mut s = String::new();
            while let Some(&x) = chars.peek() {
                if x.is_whitespace() {
                    break;
                }
                s.push(x);
                chars.next();
            }
            out.push(s);
        }
    }
    Ok(out)
}

/// Most comparisons one filter may hold, and the longest field path: bounds the work and
/// the recursion a request can cause.
const MAX_TERMS: usize = 32;
const MAX_FIELD_PARTS: usize = 16;

/// Parse a filter expression; `None` for an empty one.
pub fn parse(text: &str) -> Result<Option<Filter>, String> {
    let toks = tokens(text)?;
    if toks.len() > MAX_TERMS * 5 {
        return Err(format!("too long (at most {MAX_TERMS} comparisons)"));
    }
    if toks.is_empty() {
        return Ok(None);
    }
    let mut pos = 0;
    let f = parse_or(&toks, &mut pos)?;
    if pos != toks.len() {
        return Err(format!("unexpected \"{}\"", toks[pos]));
    }
    Ok(Some(f))
}

fn parse_or(t: &[String], pos: &mut usize) -> Result<Filter, String> {
    let mut left = parse_and(t, pos)?;
    while t.get(*pos).is_some_and(|x| x.eq_ignore_ascii_case("or")) {
        *pos += 1;
        left = Filter::Or(Box::new(left), Box::new(parse_and(t, pos)?));
    }
    Ok(left)
}

fn parse_and(t: &[String], pos: &mut usize) -> Result<Filter, String> {
    let mut left = parse_term(t, pos)?;
    while t.get(*pos).is_some_and(|x| x.eq_ignore_ascii_case("and")) {
        *pos += 1;
        left = Filter::And(Box::new(left), Box::new(parse_term(t, pos)?));
    }
    Ok(left)
}

fn parse_term(t: &[String], pos: &mut usize) -> Result<Filter, String> {
    let negate = t.get(*pos).is_some_and(|x| x.eq_ignore_ascii_case("not"));
    if negate {
        *pos += 1;
    }
    let (Some(field), Some(op), Some(value)) = (t.get(*pos), t.get(*pos + 1), t.get(*pos + 2))
    else {
        return Err("expected FIELD eq|ne VALUE".into());
    };
    let equal = match op.to_ascii_lowercase().as_str() {
        "eq" => true,
        "ne" => false,
        other => return Err(format!("unsupported operator \"{other}\" (eq, ne)")),
    };
    if field.split('.').count() > MAX_FIELD_PARTS {
        return Err(format!("field \"{field}\" is too deep"));
    }
    *pos += 3;
    Ok(Filter::Compare {
        field: field.clone(),
        equal,
        value: Pattern::new(value)?,
        negate,
    })
}

/// The value at a dot path; keys containing dots match whole.
fn lookup<'a>(v: &'a Value, parts: &[&str]) -> Option<&'a Value> {
    if parts.is_empty() {
        return Some(v);
    }
    let obj = v.as_object()?;
    for n in (1..=parts.len()).rev() {
        if let Some(child) = obj.get(&parts[..n].join("."))
            && let Some(found) = lookup(child, &parts[n..])
        {
            return Some(found);
        }
    }
    None
}

impl Filter {
    /// Whether `v` passes.
    pub fn matches(&self, v: &Value) -> bool {
        match self {
            Filter::And(a, b) => a.matches(v) && b.matches(v),
            Filter::Or(a, b) => a.matches(v) || b.matches(v),
            Filter::Compare {
                field,
                equal,
                value,
                negate,
            } => {
                let parts: Vec<&str> = field.split('.').collect();
                (value.matches(lookup(v, &parts)) == *equal) != *negate
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expressions() {
        let c1 = json!({"name": "c1", "status": "Running",
                        "config": {"image.os": "BusyBox", "limits.memory": "64MiB"},
                        "state": {"pid": 42}});
        let yes = [
            "name eq c1",
            "name ne c2",
            "status eq Running and config.image.os eq BusyBox",
            "name eq nope or name eq c1",
            "not name eq c2",
            "config.limits.memory eq '64MiB'",
            "state.pid eq 42",
            "name eq \"c1\"",
        ];
        for f in yes {
            let parsed = parse(f).ok().flatten();
            assert!(parsed.is_some_and(|p| p.matches(&c1)), "{f}");
        }
        // LXD's semantics: case-insensitive, regular expressions, anchored unless told.
        for f in [
            "status eq running",
            "name eq C.",
            "name eq (^$|^.*)",
            "name eq ^c",
            "config.missing eq ''",
            "name ne c",
        ] {
            let parsed = parse(f).ok().flatten();
            assert!(parsed.is_some_and(|p| p.matches(&c1)), "{f}");
        }
        assert!(parse("name eq (").is_err(), "a bad pattern is refused");
        for f in [
            "name eq c2",
            "status eq Running and name eq c2",
            "config.missing eq x",
            "name eq c",
            "status eq Run",
        ] {
            let parsed = parse(f).ok().flatten();
            assert!(parsed.is_some_and(|p| !p.matches(&c1)), "{f}");
        }
        assert_eq!(parse("  "), Ok(None));
        for bad in [
            "name",
            "name gt 1",
            "name eq",
            "name eq 'x",
            "name eq c1 and",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}

/// Properties of the filter parser over arbitrary query strings.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Filters built from the grammar's own words, with junk mixed in.
    fn filter_text() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(vec![
                "name",
                "status",
                "config.image.os",
                "eq",
                "ne",
                "and",
                "or",
                "not",
                "c1",
                "\"a b\"",
                "'x'",
                "\"",
                "Running",
                "a.b.c.d",
                "(",
                ")",
            ]),
            0..24,
        )
        .prop_map(|w| w.join(" "))
    }

    fn comparison() -> impl Strategy<Value = (String, bool, String)> {
        (
            prop::sample::select(vec!["name", "status", "config.image.os", "a.b"]),
            any::<bool>(),
            "[a-zA-Z0-9 ._-]{0,8}",
        )
            .prop_map(|(f, eq, v)| (f.to_string(), eq, v))
    }

    proptest! {
        #[test]
        fn any_filter_text_parses_or_is_refused_and_matching_never_panics(text in filter_text()) {
            if let Ok(Some(f)) = parse(&text) {
                let v = serde_json::json!({
                    "name": "c1", "status": "Running",
                    "config": {"image.os": "BusyBox"}, "a": {"b": 1}
                });
                let _ = f.matches(&v);
            }
        }

        #[test]
        fn any_string_is_parsed_or_refused(text in ".{0,200}") {
            let _ = parse(&text);
        }

        #[test]
        fn a_written_comparison_reads_back(terms in prop::collection::vec(comparison(), 1..6), ors in any::<u8>()) {
            // "f eq 'v' and f ne 'v' or ...": and/or chosen by the bits of `ors`.
            let mut text = String::new();
            for (i, (field, eq, value)) in terms.iter().enumerate() {
                if i > 0 {
                    text.push_str(if ors & (1 << (i % 8)) != 0 { " or " } else { " and " });
                }
                let op = if *eq { "eq" } else { "ne" };
                text.push_str(&format!("{field} {op} \"{value}\""));
            }
            let parsed = parse(&text);
            prop_assert!(matches!(parsed, Ok(Some(_))), "{text}: {parsed:?}");
        }
    }
}
