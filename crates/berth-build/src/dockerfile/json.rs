//! The JSON (exec) form: a JSON array of strings, decoded like Go's `encoding/json`.

/// Go's `encoding/json` refuses nesting deeper than this.
const MAX_DEPTH: usize = 10_000;

/// Why a JSON form was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonError {
    /// Not JSON, or not an array: BuildKit falls back to the shell form.
    NotJson,
    /// A valid JSON array with an element that is not a string: an error in BuildKit.
    NotStringArray,
}

/// Parses `rest` (leading whitespace allowed) as a JSON array of strings.
pub(crate) fn parse_string_array(rest: &str) -> Result<Vec<String>, JsonError> {
    let s = rest.trim_start();
    if !s.starts_with('[') {
        return Err(JsonError::NotJson);
    }
    let b = s.as_bytes();
    let mut p = Parser { b, pos: 1 };
    let mut out = Vec::new();
    let mut all_strings = true;
    p.ws();
    if p.peek() == Some(b']') {
        p.pos += 1;
    } else {
        loop {
            p.ws();
            if p.peek() == Some(b'"') {
                out.push(p.string()?);
            } else {
                all_strings = false;
                p.skip_value()?;
            }
            p.ws();
            match p.peek() {
                Some(b',') => p.pos += 1,
                Some(b']') => {
                    p.pos += 1;
                    break;
                }
                _ => return Err(JsonError::NotJson),
            }
        }
    }
    p.ws();
    if p.pos != b.len() {
        return Err(JsonError::NotJson);
    }
    if all_strings {
        Ok(out)
    } else {
        Err(JsonError::NotStringArray)
    }
}

struct Parser<'a> {
    b: &'a [u8],
    pos: usize,
}

#[derive(Clone, Copy)]
enum Container {
    Array,
    Object,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), JsonError> {
        if self.b[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(JsonError::NotJson)
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Result<(), JsonError> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(JsonError::NotJson),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(JsonError::NotJson);
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(JsonError::NotJson);
            }
        }
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let h = self
            .b
            .get(self.pos..self.pos + 4)
            .ok_or(JsonError::NotJson)?;
        let mut v = 0u32;
        for &c in h {
            let d = (c as char).to_digit(16).ok_or(JsonError::NotJson)?;
            v = v * 16 + d;
        }
        self.pos += 4;
        Ok(v)
    }

    /// A string starting at `"`; lone surrogates decode to U+FFFD like Go.
    fn string(&mut self) -> Result<String, JsonError> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            let c = self.peek().ok_or(JsonError::NotJson)?;
            match c {
                b'"' => {
                    self.pos += 1;
                    return Ok(String::from_utf8_lossy(&out).into_owned());
                }
                b'\\' => {
                    self.pos += 1;
                    let e = self.peek().ok_or(JsonError::NotJson)?;
                    self.pos += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let u = self.hex4()?;
                            if (0xD800..0xDC00).contains(&u)
                                && self.b[self.pos..].starts_with(b"\\u")
                            {
                                let save = self.pos;
                                self.pos += 2;
                                let lo = self.hex4()?;
                                if (0xDC00..0xE000).contains(&lo) {
                                    let cp = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
                                    char::from_u32(cp).unwrap_or('\u{FFFD}')
                                } else {
                                    self.pos = save;
                                    '\u{FFFD}'
                                }
                            } else {
                                char::from_u32(u).unwrap_or('\u{FFFD}')
                            }
                        }
                        _ => return Err(JsonError::NotJson),
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                0..=0x1f => return Err(JsonError::NotJson),
                _ => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    /// Skips one value of any type, without recursion.
    fn skip_value(&mut self) -> Result<(), JsonError> {
        let mut stack: Vec<Container> = Vec::new();
        loop {
            // A value is expected here.
            self.ws();
            match self.peek() {
                Some(b'"') => {
                    self.string()?;
                }
                Some(b'[') => {
                    self.pos += 1;
                    self.ws();
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                    } else {
                        stack.push(Container::Array);
                        if stack.len() >= MAX_DEPTH {
                            return Err(JsonError::NotJson);
                        }
                        continue;
                    }
                }
                Some(b'{') => {
                    self.pos += 1;
                    self.ws();
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                    } else {
                        stack.push(Container::Object);
                        if stack.len() >= MAX_DEPTH {
                            return Err(JsonError::NotJson);
                        }
                        self.key()?;
                        continue;
                    }
                }
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                _ => return Err(JsonError::NotJson),
            }
            // After a value: close what ends here, or go on to the next element.
            loop {
                let Some(top) = stack.last().copied() else {
                    return Ok(());
                };
                self.ws();
                match (top, self.peek()) {
                    (_, Some(b',')) => {
                        self.pos += 1;
                        if let Container::Object = top {
                            self.key()?;
                        }
                        break;
                    }
                    (Container::Array, Some(b']')) | (Container::Object, Some(b'}')) => {
                        self.pos += 1;
                        stack.pop();
                    }
                    _ => return Err(JsonError::NotJson),
                }
            }
        }
    }

    /// `"key" :` inside an object.
    fn key(&mut self) -> Result<(), JsonError> {
        self.ws();
        if self.peek() != Some(b'"') {
            return Err(JsonError::NotJson);
        }
        self.string()?;
        self.ws();
        if self.peek() != Some(b':') {
            return Err(JsonError::NotJson);
        }
        self.pos += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_arrays() {
        assert_eq!(
            parse_string_array(r#"["a", "b c"]"#),
            Ok(vec!["a".into(), "b c".into()])
        );
        assert_eq!(parse_string_array("  [ ] "), Ok(vec![]));
        assert_eq!(
            parse_string_array(r#"["say \"hi\"", "c:\\dir", "\u00e9\ud83d\ude00\n"]"#),
            Ok(vec!["say \"hi\"".into(), "c:\\dir".into(), "é😀\n".into()])
        );
        assert_eq!(
            parse_string_array(r#"["\ud800x"]"#),
            Ok(vec!["\u{FFFD}x".into()])
        );
    }

    #[test]
    fn not_json_falls_back() {
        for s in [
            "echo [",
            "[",
            "[\"a\"",
            "[\"a\",]",
            "['a']",
            "[\"a\"] x",
            "[\"c:\\dir\"]",
            "[\"\t\"]",
            "[01]",
            "[1.]",
            "[-]",
            "[tru]",
            "[{\"a\" 1}]",
            "[[1,]]",
            "{}",
        ] {
            assert_eq!(parse_string_array(s), Err(JsonError::NotJson), "{s}");
        }
    }

    #[test]
    fn non_strings_are_errors() {
        for s in [
            "[1]",
            "[\"a\", null]",
            "[true]",
            "[[\"a\"]]",
            "[{\"k\": [1, {}]}]",
            "[-0.5e+3]",
        ] {
            assert_eq!(parse_string_array(s), Err(JsonError::NotStringArray), "{s}");
        }
    }

    #[test]
    fn deep_nesting_is_not_json() {
        let deep = format!("[{}", "[".repeat(20_000));
        assert_eq!(parse_string_array(&deep), Err(JsonError::NotJson));
        let ok = format!("[{}{}]", "[".repeat(500), "]".repeat(500));
        assert_eq!(parse_string_array(&ok), Err(JsonError::NotStringArray));
    }
}
