//! Pre-serialized response bytes with patch points. A response is rendered once when its
//! price changes; per request only the ages (which move with the clock) are written in.

use bytes::Bytes;

#[derive(Debug, Clone)]
enum Part {
    Bytes(Bytes),
    /// Milliseconds elapsed since this unix-ms instant, written at render time.
    AgeSince(i64),
}

/// A rendered response whose ages are filled in at serving time.
#[derive(Debug, Clone, Default)]
pub struct Template {
    parts: Vec<Part>,
    len_hint: usize,
}

impl Template {
    /// Appends the response as of `now_ms` to `out`.
    pub fn render_into(&self, now_ms: i64, out: &mut Vec<u8>) {
        out.reserve(self.len_hint);
        let mut digits = itoa::Buffer::new();
        for part in &self.parts {
            match part {
                Part::Bytes(b) => out.extend_from_slice(b),
                Part::AgeSince(t) => {
                    out.extend_from_slice(digits.format((now_ms - t).max(0)).as_bytes())
                }
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn render(&self, now_ms: i64) -> Vec<u8> {
        let mut out = Vec::new();
        self.render_into(now_ms, &mut out);
        out
    }
}

/// Builds a [`Template`] piece by piece.
#[derive(Default)]
pub struct TemplateWriter {
    parts: Vec<Part>,
    current: Vec<u8>,
}

impl TemplateWriter {
    pub fn raw(&mut self, text: &str) -> &mut Self {
        self.current.extend_from_slice(text.as_bytes());
        self
    }

    /// A JSON string, escaped.
    pub fn string(&mut self, text: &str) -> &mut Self {
        // Writing into a Vec cannot fail; a String always serializes.
        let _ = serde_json::to_writer(&mut self.current, text);
        self
    }

    pub fn int(&mut self, n: i64) -> &mut Self {
        self.current
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        self
    }

    pub fn age_since(&mut self, instant_ms: i64) -> &mut Self {
        self.flush();
        self.parts.push(Part::AgeSince(instant_ms));
        self
    }

    fn flush(&mut self) {
        if !self.current.is_empty() {
            self.parts
                .push(Part::Bytes(Bytes::from(std::mem::take(&mut self.current))));
        }
    }

    pub fn finish(mut self) -> Template {
        self.flush();
        let len_hint = self
            .parts
            .iter()
            .map(|p| match p {
                Part::Bytes(b) => b.len(),
                Part::AgeSince(_) => 8,
            })
            .sum();
        Template {
            parts: self.parts,
            len_hint,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_patched_at_render_time() {
        let mut w = TemplateWriter::default();
        w.raw("{\"a\":")
            .string("x\"y")
            .raw(",\"age_ms\":")
            .age_since(1000)
            .raw("}");
        let t = w.finish();
        assert_eq!(t.render(1250), br#"{"a":"x\"y","age_ms":250}"#);
        assert_eq!(t.render(5000), br#"{"a":"x\"y","age_ms":4000}"#);
        assert_eq!(
            t.render(0),
            br#"{"a":"x\"y","age_ms":0}"#,
            "clock skew never gives a negative age"
        );
    }
}
