//! Operation path templates (`/penduduk/{nik}`): parsed once at validation time.
//!
//! A template is a sequence of whole segments, each a literal or a `{param}`. Literals are
//! compared with *decoded* request segments, so they must be written in canonical form; a
//! template that could never match, or that two spellings could match, is a config error.

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Literal(String),
    Param(String),
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

// === impl Template ===

impl Template {
    /// Parses a template, explaining what is wrong with a malformed one.
    pub fn parse(text: &str) -> Result<Template, String> {
        let rest = text
            .strip_prefix('/')
            .ok_or_else(|| format!("`{text}` must start with `/`"))?;
        let mut parts = Vec::new();
        if rest.is_empty() {
            return Ok(Template { parts });
        }
        for segment in rest.split('/') {
            parts.push(parse_part(text, segment)?);
        }
        let mut names: Vec<&str> = Vec::new();
        for part in &parts {
            if let Part::Param(name) = part {
                if names.contains(&name.as_str()) {
                    return Err(format!("`{text}` names the parameter `{{{name}}}` twice"));
                }
                names.push(name);
            }
        }
        Ok(Template { parts })
    }

    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// Parameter names in the order they appear.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Param(name) => Some(name.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// The path with each parameter replaced by its value, percent-encoded as one segment;
    /// the error names the first parameter without a value.
    pub fn render<'a>(&self, value: impl Fn(&str) -> Option<&'a str>) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            out.push('/');
            match part {
                Part::Literal(l) => super::normalize::encode_segment(&mut out, l),
                Part::Param(name) => {
                    let v = value(name).ok_or_else(|| name.clone())?;
                    super::normalize::encode_segment(&mut out, v);
                }
            }
        }
        if out.is_empty() {
            out.push('/');
        }
        Ok(out)
    }

    /// The template with parameter names erased (`/a/{}`): two templates with the same shape
    /// match exactly the same paths.
    pub fn shape(&self) -> String {
        let mut out = String::new();
        for part in &self.parts {
            out.push('/');
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Param(_) => out.push_str("{}"),
            }
        }
        if out.is_empty() {
            out.push('/');
        }
        out
    }
}

fn parse_part(text: &str, segment: &str) -> Result<Part, String> {
    if segment.is_empty() {
        return Err(format!(
            "`{text}` has an empty segment (`//` or a trailing `/`)"
        ));
    }
    if let Some(inner) = segment.strip_prefix('{') {
        let name = inner.strip_suffix('}').ok_or_else(|| {
            format!("`{text}`: `{segment}` opens a parameter without closing it with `}}`")
        })?;
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "`{text}`: parameter name `{name}` must be letters, digits and `_`, not starting with a digit"
            ));
        }
        return Ok(Part::Param(name.to_owned()));
    }
    if segment.contains(['{', '}']) {
        return Err(format!(
            "`{text}`: `{segment}` mixes a parameter with text; a parameter is a whole segment"
        ));
    }
    if segment == "." || segment == ".." {
        return Err(format!("`{text}` has a dot segment `{segment}`"));
    }
    if let Some(c) = segment
        .chars()
        .find(|&c| matches!(c, '%' | '?' | '#' | '\\') || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "`{text}`: `{segment}` contains `{}`; write literals decoded, without `%`, `?`, `#`, `\\` or spaces",
            c.escape_default()
        ));
    }
    Ok(Part::Literal(segment.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_literals_and_params() {
        let t = Template::parse("/penduduk/{nik}/keluarga").unwrap();
        assert_eq!(
            t.parts(),
            [
                Part::Literal("penduduk".into()),
                Part::Param("nik".into()),
                Part::Literal("keluarga".into())
            ]
        );
        assert_eq!(t.params().collect::<Vec<_>>(), ["nik"]);
        assert_eq!(t.shape(), "/penduduk/{}/keluarga");
        assert_eq!(Template::parse("/").unwrap().shape(), "/");
    }

    #[test]
    fn refuses_malformed_templates() {
        for (bad, why) in [
            ("penduduk", "must start with"),
            ("/a//b", "empty segment"),
            ("/a/", "empty segment"),
            ("/a/{nik", "without closing"),
            ("/a/{1x}", "parameter name"),
            ("/a/{}", "parameter name"),
            ("/a/x{nik}", "mixes"),
            ("/a/{n}/{n}", "twice"),
            ("/a/../b", "dot segment"),
            ("/a/b%20c", "contains `%`"),
            ("/a/b?c", "contains `?`"),
        ] {
            let err = Template::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
