//! Names from the chain, made safe to print. Any member of a library names files and
//! devices, and a name may hold terminal escape sequences, carriage returns or newlines: raw
//! on a terminal they could rewrite what is shown, and in a line format they could forge
//! lines. Human output prints names through [`text`]; one-line-per-record output through
//! [`field`]. Machine output is JSON, which escapes on its own.

use std::borrow::Cow;

/// `s` with every control character escaped (`\n`, `\r`, `\t`, `\u{1b}`, …): one line,
/// no terminal sequences.
pub fn text(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `s` as one space-free field of a line: quoted and escaped (as Rust writes strings) when
/// it holds whitespace, a quote, a backslash or a control character; as it is otherwise.
pub fn field(s: &str) -> Cow<'_, str> {
    let plain = !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\');
    if plain {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(format!("{s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(text("a.txt"), "a.txt");
        assert_eq!(text("a\u{1b}[2Jb\r\nc"), "a\\u{1b}[2Jb\\r\\nc");
        assert_eq!(text("naïve"), "naïve");
        assert_eq!(field("a.txt"), "a.txt");
        assert_eq!(field("a b.txt"), "\"a b.txt\"");
        assert_eq!(field("x\nfetched y"), "\"x\\nfetched y\"");
        assert_eq!(field(""), "\"\"");
        for s in ["a b", "\u{1b}", "\"", "\\", "\t", "a\u{85}b"] {
            assert!(!field(s).chars().any(|c| c.is_control()), "{s:?}");
            assert!(!text(s).chars().any(|c| c.is_control()), "{s:?}");
        }
    }
}
