//! A validating scanner for the top level of a JSON object request body.
//!
//! The gateway needs a handful of top-level fields (`model`, `stream`, overrides) and must refuse
//! malformed JSON, but never needs the tree. serde_json's skipping of a long string (a prompt) walks it
//! byte by byte; this scanner jumps from quote to backslash with `memchr`, checks the skipped run for
//! control characters in a loop the compiler vectorises, and validates UTF-8 once for the whole body.
//! It accepts exactly RFC 8259 JSON (a differential fuzz target compares it with serde_json), and
//! refuses nesting deeper than a limit, which also bounds its recursion.

use std::borrow::Cow;

/// Why a body is not acceptable JSON: a message and the byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError {
    pub what: &'static str,
    pub at: usize,
    /// The body nests deeper than allowed (valid JSON otherwise unknown).
    pub too_deep: bool,
}

/// A top-level member: the decoded key and the value's raw JSON text.
pub type Member<'a> = (Cow<'a, str>, &'a str);

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    max_depth: usize,
}

fn err<T>(what: &'static str, at: usize) -> Result<T, ScanError> {
    Err(ScanError {
        what,
        at,
        too_deep: false,
    })
}

impl Scanner<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn expect(&mut self, c: u8, what: &'static str) -> Result<(), ScanError> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            err(what, self.i)
        }
    }

    /// A string starting at the current `"`; returns whether it had escapes.
    fn string(&mut self) -> Result<bool, ScanError> {
        self.expect(b'"', "expected a string")?;
        let mut escaped = false;
        loop {
            let rest = &self.b[self.i..];
            let Some(k) = memchr::memchr2(b'"', b'\\', rest) else {
                return err("unterminated string", self.b.len());
            };
            if rest[..k].iter().fold(false, |acc, &c| acc | (c < 0x20)) {
                return err("control character in a string", self.i);
            }
            self.i += k;
            if self.b[self.i] == b'"' {
                self.i += 1;
                return Ok(escaped);
            }
            escaped = true;
            self.i += 1;
            match self.peek() {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                Some(b'u') => {
                    let hex = self.b.get(self.i + 1..self.i + 5);
                    if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                        return err("invalid \\u escape", self.i);
                    }
                    self.i += 5;
                }
                _ => return err("invalid escape", self.i),
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Result<(), ScanError> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return err("invalid number", self.i),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return err("invalid number", self.i);
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return err("invalid number", self.i);
            }
        }
        Ok(())
    }

    fn literal(&mut self, lit: &[u8]) -> Result<(), ScanError> {
        if self.b[self.i..].starts_with(lit) {
            self.i += lit.len();
            Ok(())
        } else {
            err("invalid literal", self.i)
        }
    }

    fn value(&mut self, depth: usize) -> Result<(), ScanError> {
        self.ws();
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string().map(|_| ()),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(_) => err("expected a value", self.i),
            None => err("unexpected end of input", self.i),
        }
    }

    fn deeper(&self, depth: usize) -> Result<(), ScanError> {
        if depth > self.max_depth {
            return Err(ScanError {
                what: "nested too deep",
                at: self.i,
                too_deep: true,
            });
        }
        Ok(())
    }

    fn object(&mut self, depth: usize) -> Result<(), ScanError> {
        self.deeper(depth)?;
        self.expect(b'{', "expected an object")?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            self.string()?;
            self.ws();
            self.expect(b':', "expected `:`")?;
            self.value(depth)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return err("expected `,` or `}`", self.i),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<(), ScanError> {
        self.deeper(depth)?;
        self.expect(b'[', "expected an array")?;
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.value(depth)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return err("expected `,` or `]`", self.i),
            }
        }
    }
}

/// Validate `bytes` as one JSON object (nested at most `max_depth` deep) and return its members in
/// order, keys decoded, values as raw JSON text.
pub fn top_level(bytes: &[u8], max_depth: usize) -> Result<Vec<Member<'_>>, ScanError> {
    let text = std::str::from_utf8(bytes).map_err(|e| ScanError {
        what: "invalid UTF-8",
        at: e.valid_up_to(),
        too_deep: false,
    })?;
    let mut s = Scanner {
        b: bytes,
        i: 0,
        max_depth,
    };
    let mut spans = Vec::with_capacity(8);
    s.ws();
    s.expect(b'{', "expected a JSON object")?;
    s.ws();
    if s.peek() == Some(b'}') {
        s.i += 1;
    } else {
        loop {
            s.ws();
            let k0 = s.i;
            let escaped = s.string()?;
            let k1 = s.i;
            s.ws();
            s.expect(b':', "expected `:`")?;
            s.ws();
            let v0 = s.i;
            s.value(1)?;
            spans.push((k0, k1, escaped, v0, s.i));
            s.ws();
            match s.peek() {
                Some(b',') => s.i += 1,
                Some(b'}') => {
                    s.i += 1;
                    break;
                }
                _ => return err("expected `,` or `}`", s.i),
            }
        }
    }
    s.ws();
    if s.i != bytes.len() {
        return err("trailing characters", s.i);
    }
    // Every span starts and ends at an ASCII delimiter, so these are char boundaries.
    let slice = |a: usize, b: usize| {
        text.get(a..b).ok_or(ScanError {
            what: "internal",
            at: a,
            too_deep: false,
        })
    };
    let mut out = Vec::with_capacity(spans.len());
    for (k0, k1, escaped, v0, v1) in spans {
        let key = if escaped {
            let raw = slice(k0, k1)?;
            Cow::Owned(serde_json::from_str::<String>(raw).map_err(|_| ScanError {
                what: "invalid key",
                at: k0,
                too_deep: false,
            })?)
        } else {
            Cow::Borrowed(slice(k0 + 1, k1 - 1)?)
        };
        out.push((key, slice(v0, v1)?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> bool {
        top_level(s.as_bytes(), 64).is_ok()
    }

    #[test]
    fn accepts_and_splits() {
        let m = top_level(
            br#" { "model" : "m", "a\u0041" : [1, -2.5e+3, {"x": null}], "t": true } "#,
            64,
        )
        .unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0], (Cow::Borrowed("model"), "\"m\""));
        assert_eq!(m[1].0, "aA");
        assert_eq!(m[1].1, r#"[1, -2.5e+3, {"x": null}]"#);
        assert_eq!(m[2].1, "true");
        assert!(ok("{}"));
        assert!(ok(r#"{"s": "escaped \t tab"}"#));
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "[]",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":-}",
            "{\"a\":1e}",
            "{\"a\":tru}",
            "{\"a\":\"x\ty\"}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\u12G4\"}",
            "{\"a\":1} x",
            "{\"a\":[1 2]}",
            "{'a':1}",
        ] {
            assert!(!ok(bad), "{bad:?} accepted");
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(70), "]".repeat(70));
        let e = top_level(deep.as_bytes(), 64).unwrap_err();
        assert!(e.too_deep);
        assert!(top_level(b"{\"a\":\"\xff\"}", 64).is_err());
    }
}
