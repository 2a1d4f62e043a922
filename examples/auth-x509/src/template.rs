//! Text with `{name}` placeholders: parsed and checked once when the rules load, expanded per
//! request. Used for identities and attribute values (certificate placeholders) and for ACL
//! filters (`{identity}`).

use std::fmt;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Placeholder(String),
}

/// A parsed template; [`Template::expand`] fills it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    source: String,
    parts: Vec<Part>,
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Template {
    /// Parses `source`; every placeholder must be one of `known`.
    pub(crate) fn parse(source: &str, known: &[&str]) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(start) = rest.find(['{', '}']) {
            if rest[start..].starts_with('}') {
                return Err(format!("`{source}`: `}}` without `{{`"));
            }
            let end = rest[start..]
                .find('}')
                .map(|e| e + start)
                .ok_or_else(|| format!("`{source}`: `{{` without `}}`"))?;
            let name = &rest[start + 1..end];
            if !known.contains(&name) {
                let known: Vec<String> = known.iter().map(|k| format!("{{{k}}}")).collect();
                return Err(format!(
                    "`{source}`: unknown placeholder `{{{name}}}` (known here: {})",
                    known.join(", ")
                ));
            }
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            parts.push(Part::Placeholder(name.to_owned()));
            rest = &rest[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template {
            source: source.to_owned(),
            parts,
        })
    }

    /// Whether `name` appears in the template.
    pub(crate) fn uses(&self, name: &str) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Placeholder(n) if n == name))
    }

    /// The template with every placeholder replaced by `value(name)`; `Err(name)` for the first
    /// placeholder without a value.
    pub(crate) fn expand(
        &self,
        mut value: impl FnMut(&str) -> Option<String>,
    ) -> Result<String, &str> {
        let mut out = String::with_capacity(self.source.len() + 16);
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Placeholder(name) => out.push_str(&value(name).ok_or(name.as_str())?),
            }
        }
        Ok(out)
    }

    /// The template with every placeholder replaced by `with` (to check the shape of a filter).
    pub(crate) fn with_placeholders_as(&self, with: &str) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Text(text) => text.as_str(),
                Part::Placeholder(_) => with,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_expands() {
        let t = Template::parse("devices/{identity}/x{identity}", &["identity"]).unwrap();
        assert!(t.uses("identity") && !t.uses("cn"));
        assert_eq!(
            t.expand(|_| Some("d1".into())).unwrap(),
            "devices/d1/xd1".to_owned()
        );
        assert_eq!(t.expand(|_| None), Err("identity"));
        assert_eq!(t.with_placeholders_as("x"), "devices/x/xx");
        let plain = Template::parse("plain", &[]).unwrap();
        assert_eq!(plain.expand(|_| None).unwrap(), "plain");
        assert_eq!(plain.to_string(), "plain");
    }

    #[test]
    fn bad_templates_are_errors() {
        let err = Template::parse("{cn", &["cn"]).unwrap_err();
        assert!(err.contains("without `}`"), "{err}");
        let err = Template::parse("cn}", &["cn"]).unwrap_err();
        assert!(err.contains("without `{`"), "{err}");
        let err = Template::parse("{username}", &["cn", "subject"]).unwrap_err();
        assert!(
            err.contains("unknown placeholder `{username}`") && err.contains("{cn}, {subject}"),
            "{err}"
        );
        assert!(Template::parse("{}", &["cn"]).is_err());
    }
}
