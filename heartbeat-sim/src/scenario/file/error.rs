//! Errors that point into the file: path, line and column, the field, the line underlined.

use std::fmt::Write as _;

use super::Span;

/// The file's text and name, to point at a span in it.
pub(super) struct Doc<'a> {
    pub(super) path: &'a str,
    pub(super) text: &'a str,
}

impl Doc<'_> {
    /// `PATH:LINE:COL: FIELD: MESSAGE`, then the line with the span underlined.
    pub(super) fn error(
        &self,
        span: &Span,
        field: &str,
        message: impl std::fmt::Display,
    ) -> String {
        let start = span.start.min(self.text.len());
        let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_no = self.text[..start].matches('\n').count() + 1;
        let line = self.text[line_start..].lines().next().unwrap_or("");
        let col = self.text[line_start..start].chars().count() + 1;
        let width = self.text[start..span.end.min(self.text.len())]
            .chars()
            .take_while(|&c| c != '\n')
            .count()
            .max(1);
        let gutter = line_no.to_string().len();
        let mut o = format!("{}:{line_no}:{col}: ", self.path);
        if !field.is_empty() {
            let _ = write!(o, "`{field}`: ");
        }
        let _ = writeln!(o, "{message}");
        let _ = writeln!(o, "{:>gutter$} | {line}", line_no);
        let _ = write!(
            o,
            "{:>gutter$} | {}{}",
            "",
            " ".repeat(col - 1),
            "^".repeat(width)
        );
        o
    }

    /// A `toml` error in this file, with the field it is about.
    pub(super) fn toml_error(&self, e: &toml::de::Error) -> String {
        let span = e.span().unwrap_or(0..0);
        // The error's own path of keys, which `toml` prints only without the input.
        let mut bare = e.clone();
        bare.set_input(None);
        let field = bare
            .to_string()
            .lines()
            .find_map(|l| l.strip_prefix("in `").and_then(|l| l.strip_suffix('`')))
            .map(|path| self.indexed(path, span.start))
            .unwrap_or_else(|| self.key_at(&span));
        self.error(&span, &field, e.message().trim_end())
    }

    /// `action.at` as `action[2].at` when the error is in the third `[[action]]` (toml's key
    /// paths leave out array indices).
    fn indexed(&self, path: &str, at: usize) -> String {
        let (first, rest) = path.split_once('.').unwrap_or((path, ""));
        let header = format!("[[{first}]]");
        // Up to the end of the error's line: a missing field is reported at its table's header.
        let at = at.min(self.text.len());
        let end = self.text[at..]
            .find('\n')
            .map_or(self.text.len(), |i| at + i);
        let before = &self.text[..end];
        match before.lines().filter(|l| l.trim() == header).count() {
            0 => path.to_owned(),
            n if rest.is_empty() => format!("{first}[{}]", n - 1),
            n => format!("{first}[{}].{rest}", n - 1),
        }
    }

    /// The key of the `key = value` line a span is on, if any.
    fn key_at(&self, span: &Span) -> String {
        let start = span.start.min(self.text.len());
        let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line = self.text[line_start..].lines().next().unwrap_or("");
        match line.split_once('=') {
            Some((key, _)) if line_start + key.len() <= start => key.trim().to_owned(),
            _ => String::new(),
        }
    }
}
