//! Just enough of a reply read to classify it, without parsing the JSON: the string value of
//! a top-level-looking `"id"` and the `code` inside an `"error":{...}` object. The node's
//! answers are compact JSON with escaped strings, so a key pattern `"name":` cannot occur
//! inside a string value.

use std::sync::LazyLock;

use memchr::memmem::Finder;

// Built once: a search set up on every call costs more than it finds in a short reply.
static ID: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"id\""));
static ERROR: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"error\""));
static CODE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"code\""));

/// The most distinct error kinds a run keeps apart; more go under [`OTHER_KIND`].
pub const MAX_KINDS: usize = 32;
/// Where error kinds beyond [`MAX_KINDS`] are counted.
pub const OTHER_KIND: &str = "other";

/// The string value of `"id": "..."`; `None` if absent or not a plain string.
pub fn id(json: &[u8]) -> Option<&[u8]> {
    string_field(json, &ID)
}

/// The string value of `"key": "..."` (`key` finds `"key"`); `None` if absent or not a plain
/// string.
fn string_field<'a>(json: &'a [u8], key: &Finder<'_>) -> Option<&'a [u8]> {
    let mut from = 0;
    while let Some(at) = key.find(&json[from..]) {
        let after = from + at + key.needle().len();
        if let Some(rest) = after_colon(&json[after..]) {
            let rest = rest.strip_prefix(b"\"")?;
            let end = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
            return (rest[end] == b'"').then_some(&rest[..end]);
        }
        from = after;
    }
    None
}

/// The `code` of an `"error":{"code":"..."}` object, if the body carries one. A code that is
/// not a short snake_case word comes back as `bad_error_code`, so a strange server cannot
/// grow the error table.
pub fn error_code(json: &[u8]) -> Option<&str> {
    let mut from = 0;
    while let Some(at) = ERROR.find(&json[from..]) {
        let after = from + at + ERROR.needle().len();
        if let Some(rest) = after_colon(&json[after..])
            && rest.first() == Some(&b'{')
        {
            let code = string_field(rest, &CODE).unwrap_or(b"");
            let plain = !code.is_empty()
                && code.len() <= 64
                && code
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
            // A plain code is ASCII, so always UTF-8.
            return Some(
                std::str::from_utf8(code)
                    .ok()
                    .filter(|_| plain)
                    .unwrap_or("bad_error_code"),
            );
        }
        from = after;
    }
    None
}

/// The bytes after `\s*:\s*`, if that is what `rest` starts with.
fn after_colon(rest: &[u8]) -> Option<&[u8]> {
    let rest = rest.trim_ascii_start().strip_prefix(b":")?;
    Some(rest.trim_ascii_start())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_found_first_last_or_spaced() {
        let cases: [&[u8]; 4] = [
            br#"{"id":"7-3","asset":"BTC","price":"1"}"#,
            br#"{"asset":"BTC","sources":[{"source":"okx-ws"}],"id":"7-3"}"#,
            br#"{ "asset" : "BTC", "id" : "7-3" }"#,
            br#"{"error":{"code":"rate_limited","message":"\"id\":\"x\""},"id":"7-3"}"#,
        ];
        for case in cases {
            assert_eq!(
                id(case),
                Some(&b"7-3"[..]),
                "{}",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[test]
    fn an_id_that_is_not_a_string_or_a_key_is_not_taken() {
        assert_eq!(id(br#"{"id":7}"#), None);
        assert_eq!(id(br#"{"source":"id","x":1}"#), None);
        assert_eq!(id(br#"{"asset":"BTC"}"#), None);
    }

    #[test]
    fn error_codes_are_read_and_success_bodies_have_none() {
        assert_eq!(
            error_code(br#"{"id":"1","error":{"code":"stale_price","message":"old"}}"#),
            Some("stale_price")
        );
        assert_eq!(
            error_code(br#"{"error": {"message":"m", "code": "rate_limited"}}"#),
            Some("rate_limited")
        );
        assert_eq!(
            error_code(br#"{"error":{"code":"<script>"}}"#),
            Some("bad_error_code")
        );
        assert_eq!(error_code(br#"{"asset":"BTC","price":"1","id":"1"}"#), None);
        assert_eq!(error_code(br#"{"note":"error","id":"1"}"#), None);
    }
}
