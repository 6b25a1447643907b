//! A minimal JSON writer for the one-object outputs (`verify --json`, and
//! later the event stream). Builds text; the binary decides where it goes.

use std::fmt::Write;

/// Appends `s` to `out` as a JSON string literal. The text is kept exact:
/// the C0 controls must be escaped (RFC 8259), and DEL and the C1 controls
/// are escaped too (`\u007f`, `\u009b`) so a stream read on a terminal
/// cannot drive it; other characters, bidi and format ones included, are
/// written as they are, for the programs that read JSON (docs/JSON.md).
pub fn string_into(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A JSON object under construction: `Object::new().str("k", "v").finish()`.
#[derive(Debug, Default)]
pub struct Object {
    buf: String,
}

impl Object {
    /// An empty object.
    pub fn new() -> Object {
        Object {
            buf: String::from("{"),
        }
    }

    fn key(&mut self, k: &str) {
        if self.buf.len() > 1 {
            self.buf.push(',');
        }
        string_into(&mut self.buf, k);
        self.buf.push(':');
    }

    /// Adds a string member.
    pub fn str(mut self, k: &str, v: &str) -> Object {
        self.key(k);
        string_into(&mut self.buf, v);
        self
    }

    /// Adds an integer member.
    pub fn num(mut self, k: &str, v: u64) -> Object {
        self.key(k);
        let _ = write!(self.buf, "{v}");
        self
    }

    /// Adds a boolean member.
    pub fn bool(mut self, k: &str, v: bool) -> Object {
        self.key(k);
        self.buf.push_str(if v { "true" } else { "false" });
        self
    }

    /// Adds a member whose value is already JSON text (an object or array).
    pub fn raw(mut self, k: &str, json: &str) -> Object {
        self.key(k);
        self.buf.push_str(json);
        self
    }

    /// The object's text.
    pub fn finish(mut self) -> String {
        self.buf.push('}');
        self.buf
    }
}

/// A JSON array of already-encoded values.
pub fn array(items: impl IntoIterator<Item = String>) -> String {
    let mut out = String::from("[");
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&item);
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_and_escapes() {
        let inner = Object::new().num("n", 3).finish();
        let o = Object::new()
            .str("name", "a \"b\"\\\n\u{1}é")
            .num("size", 42)
            .bool("ok", false)
            .raw("list", &array([inner, "1".to_string()]))
            .finish();
        assert_eq!(
            o,
            r#"{"name":"a \"b\"\\\n\u0001é","size":42,"ok":false,"list":[{"n":3},1]}"#
        );
        assert_eq!(Object::new().finish(), "{}");
        assert_eq!(array(Vec::new()), "[]");
        // DEL and C1 escaped; a bidi override kept as it is.
        let mut s = String::new();
        string_into(&mut s, "\u{7f}\u{9b}\u{202e}");
        assert_eq!(s, "\"\\u007f\\u009b\u{202e}\"");
    }
}
