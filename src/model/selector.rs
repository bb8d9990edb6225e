//! Selectors: label requirements `k=v`, `k==v`, `k!=v`, `k`, `!k`,
//! `k in (a,b)`, `k notin (a,b)`, and field requirements `status.state=X`,
//! `status.state==X`, `status.state!=X`, `metadata.terminating=true|false`
//! (and `!=`), each comma-separated and ANDed (Kubernetes syntax).

use std::collections::BTreeMap;

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `k=v` / `k==v`.
    Equals(String, String),
    /// `k!=v` (also matches objects without `k`).
    NotEquals(String, String),
    /// `k`.
    Exists(String),
    /// `!k`.
    NotExists(String),
    /// `k in (a,b)`.
    In(String, Vec<String>),
    /// `k notin (a,b)` (also matches objects without `k`).
    NotIn(String, Vec<String>),
}

/// The fields a field selector may name.
pub const SELECTABLE_FIELDS: &[&str] = &["status.state", "metadata.terminating"];

/// A field a field selector may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `status.state`: the state's name.
    State,
    /// `metadata.terminating`: `true` when the object has its own
    /// `deletionTimestamp`.
    Terminating,
}

/// One requirement of a field selector: the field equals (or, with
/// `equals` false, differs from) `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// The field.
    pub field: Field,
    /// `=`/`==` (true) or `!=`.
    pub equals: bool,
    /// The value: a state's name, or `true`/`false`.
    pub value: String,
}

/// A parsed selector: every requirement must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    /// Label requirements.
    pub labels: Vec<Requirement>,
    /// Field requirements (on `status.state`).
    pub fields: Vec<FieldRequirement>,
}

impl Selector {
    /// Parses a label selector; the error says which part is malformed.
    pub fn parse(s: &str) -> Result<Selector, String> {
        let mut labels = Vec::new();
        for part in split_top_level(s)? {
            let part = part.trim();
            if part.is_empty() {
                return Err("empty requirement (stray comma?)".into());
            }
            labels.push(parse_requirement(part)?);
        }
        Ok(Selector {
            labels,
            fields: Vec::new(),
        })
    }

    /// Adds the requirements of a field selector (`status.state=X`,
    /// `status.state!=X`, comma-separated); the error names the field or
    /// the part it cannot read.
    pub fn with_fields(mut self, s: &str) -> Result<Selector, String> {
        for part in s.split(',') {
            let part = part.trim();
            if part.is_empty() {
                return Err("empty requirement (stray comma?)".into());
            }
            let (field, equals, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, true, v)
            } else {
                return Err(format!(
                    "{part:?}: expected field=value or field!=value (fields: {})",
                    SELECTABLE_FIELDS.join(", ")
                ));
            };
            let value = value.trim();
            let field = match field.trim() {
                "status.state" => {
                    if value.is_empty() || value.contains(|c: char| !c.is_ascii_alphanumeric()) {
                        return Err(format!(
                            "{part:?}: expected a state name after the operator"
                        ));
                    }
                    Field::State
                }
                "metadata.terminating" => {
                    if value != "true" && value != "false" {
                        return Err(format!("{part:?}: metadata.terminating is true or false"));
                    }
                    Field::Terminating
                }
                other => {
                    return Err(format!(
                        "{other:?} cannot be selected on (fields: {})",
                        SELECTABLE_FIELDS.join(", ")
                    ));
                }
            };
            self.fields.push(FieldRequirement {
                field,
                equals,
                value: value.to_string(),
            });
        }
        Ok(self)
    }

    /// Whether it has field requirements (matching needs the whole
    /// object, not only its labels).
    pub fn has_fields(&self) -> bool {
        !self.fields.is_empty()
    }

    /// Whether an object whose status state is named `state` (and which
    /// is `terminating` or not) satisfies the field requirements.
    pub fn matches_fields(&self, state: &str, terminating: bool) -> bool {
        self.fields.iter().all(|f| {
            let is = match f.field {
                Field::State => f.value == state,
                Field::Terminating => (f.value == "true") == terminating,
            };
            is == f.equals
        })
    }

    /// Whether `obj` satisfies the field requirements.
    pub fn matches_object_fields(&self, obj: &super::AnyObject) -> bool {
        self.matches_fields(obj.state_name(), obj.meta().is_terminating())
    }

    /// Whether `obj` satisfies every requirement.
    pub fn matches_object(&self, obj: &super::AnyObject) -> bool {
        self.matches(&obj.meta().labels) && self.matches_object_fields(obj)
    }

    /// Whether `labels` satisfy every label requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_with(|k| labels.get(k).map(String::as_str))
    }

    /// Whether labels read through `get` (label key -> value) satisfy
    /// every label requirement.
    pub fn matches_with<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.labels.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
            Requirement::In(k, vs) => get(k).is_some_and(|v| vs.iter().any(|x| x == v)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|v| !vs.iter().any(|x| x == v)),
        })
    }
}

fn split_top_level(s: &str) -> Result<Vec<&str>, String> {
    let (mut depth, mut start, mut parts) = (0i32, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(format!("unbalanced parentheses in {s:?}"));
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced parentheses in {s:?}"));
    }
    if !s.trim().is_empty() {
        parts.push(&s[start..]);
    }
    Ok(parts)
}

fn key(k: &str, whole: &str) -> Result<String, String> {
    let k = k.trim();
    if k.is_empty() || k.contains(|c: char| c.is_whitespace() || "=!(),".contains(c)) {
        return Err(format!("invalid label key in {whole:?}"));
    }
    Ok(k.to_string())
}

fn value(v: &str, whole: &str) -> Result<String, String> {
    let v = v.trim();
    if v.contains(|c: char| c.is_whitespace() || "=!(),".contains(c)) {
        return Err(format!("invalid label value in {whole:?}"));
    }
    Ok(v.to_string())
}

fn parse_requirement(p: &str) -> Result<Requirement, String> {
    if let Some(open) = p.find('(') {
        let close = p
            .rfind(')')
            .filter(|c| *c == p.len() - 1)
            .ok_or_else(|| format!("{p:?}: expected ')' at the end"))?;
        let head = p[..open].trim();
        let values = p[open + 1..close]
            .split(',')
            .map(|v| value(v, p))
            .collect::<Result<Vec<_>, _>>()?;
        if values.iter().any(String::is_empty) {
            return Err(format!("{p:?}: empty value in set"));
        }
        let (k, op) = head
            .rsplit_once(char::is_whitespace)
            .ok_or_else(|| format!("{p:?}: expected 'key in (...)' or 'key notin (...)'"))?;
        return match op {
            "in" => Ok(Requirement::In(key(k, p)?, values)),
            "notin" => Ok(Requirement::NotIn(key(k, p)?, values)),
            _ => Err(format!("{p:?}: unknown set operator {op:?} (in, notin)")),
        };
    }
    if let Some((k, v)) = p.split_once("!=") {
        return Ok(Requirement::NotEquals(key(k, p)?, value(v, p)?));
    }
    if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
        return Ok(Requirement::Equals(key(k, p)?, value(v, p)?));
    }
    if let Some(k) = p.strip_prefix('!') {
        return Ok(Requirement::NotExists(key(k, p)?));
    }
    Ok(Requirement::Exists(key(p, p)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn all_six_operators() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        let cases = [
            ("app=web", true),
            ("app==web", true),
            ("app=db", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("app", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("app in (db, web)", true),
            ("app in (db)", false),
            ("app notin (db)", true),
            ("missing notin (db)", true),
            ("app notin (web,db)", false),
            ("app=web,tier in (front,back),!gone", true),
            ("app=web,tier=back", false),
            ("", true),
        ];
        for (sel, want) in cases {
            assert_eq!(Selector::parse(sel).unwrap().matches(&l), want, "{sel}");
        }
    }

    #[test]
    fn field_requirements() {
        let s = Selector::parse("app=web")
            .unwrap()
            .with_fields("status.state=Failed")
            .unwrap();
        assert!(s.has_fields());
        assert!(s.matches_fields("Failed", false));
        assert!(!s.matches_fields("Ready", false));
        let s = Selector::default()
            .with_fields("status.state!=Ready, status.state==Failed")
            .unwrap();
        assert!(s.matches_fields("Failed", true));
        assert!(!s.matches_fields("Ready", false));
        assert!(!s.matches_fields("Pending", false));
        let s = Selector::default()
            .with_fields("metadata.terminating=true")
            .unwrap();
        assert!(s.matches_fields("Ready", true));
        assert!(!s.matches_fields("Ready", false));
        let s = Selector::default()
            .with_fields("metadata.terminating!=true,status.state=Ready")
            .unwrap();
        assert!(s.matches_fields("Ready", false));
        assert!(!s.matches_fields("Ready", true));
        for bad in [
            "",
            "status.state",
            "spec.image=x",
            "status.state=",
            "status.state=a b",
            "status.state=Ready,",
            "metadata.name=x",
            "metadata.terminating=yes",
            "metadata.terminating=",
        ] {
            let e = Selector::default().with_fields(bad).unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
        let e = Selector::default().with_fields("spec.image=x").unwrap_err();
        assert!(
            e.contains("spec.image") && e.contains("status.state"),
            "{e}"
        );
    }

    #[test]
    fn malformed() {
        for bad in [
            "app in (a",
            "app=web,",
            "a b",
            "app in ()",
            "app within (a)",
            "=x",
            "a=(b)",
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad}");
        }
    }
}
