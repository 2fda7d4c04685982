//! Reading one UDP request datagram into a [`Request`], made owned once it is handed to the
//! future that answers it.
//!
//! Two readers, one answer: [`scan`] reads the usual shape (a flat object of the known fields,
//! plain strings, no escapes, no repeats) in one pass; anything else, and every error, is left
//! to serde_json ([`parse_general`]). A test holds the two to the same result over a fuzzed
//! corpus, and `cargo bench -p beast-api --bench udp_request` measures what the scan saves.

use std::borrow::Cow;

use beast_core::ApiError;
use serde::{Deserialize, de::IgnoredAny};

/// Longest request id echoed back.
const MAX_ID: usize = 64;

#[derive(Debug, Deserialize, PartialEq)]
pub struct Request<'a> {
    #[serde(borrow, default)]
    pub key: Cow<'a, str>,
    #[serde(borrow, default)]
    pub asset: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub assets: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow, default)]
    pub source: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub id: Option<Cow<'a, str>>,
}

impl Request<'_> {
    /// The request with its strings owned, to be answered by a task of its own.
    pub fn into_owned(self) -> Request<'static> {
        let own = |c: Cow<'_, str>| Cow::Owned(c.into_owned());
        Request {
            key: own(self.key),
            asset: self.asset.map(own),
            assets: self.assets.map(|a| a.into_iter().map(own).collect()),
            source: self.source.map(own),
            id: self.id.map(own),
        }
    }
}

pub enum Parsed<'a> {
    Request(Request<'a>),
    /// JSON, but not a valid request: answered with this error (and the id, if readable).
    Invalid {
        id: Option<String>,
        error: ApiError,
    },
    /// Not JSON at all: dropped.
    Garbage,
}

/// The `id` of a JSON request to echo in its answer, if it has a readable one.
pub(crate) fn echo_id(request: &serde_json::Value) -> Option<String> {
    request
        .get("id")
        .and_then(|i| i.as_str())
        .filter(|id| id.chars().count() <= MAX_ID)
        .map(str::to_owned)
}

/// A datagram read as a `T`; JSON that is not one is the 400 to answer it with, and anything
/// else (`None`) is garbage, to drop. JSON is UTF-8 in JSON's grammar, however deeply nested:
/// serde_json skips over a value without the depth limit (128 levels) its `Value` and typed
/// readers keep, so a request nested deeper is answered, not dropped.
pub(crate) fn read<'a, T: Deserialize<'a>>(datagram: &'a [u8]) -> Result<T, Option<ApiError>> {
    serde_json::from_slice(datagram).map_err(|e| {
        let json = std::str::from_utf8(datagram)
            .is_ok_and(|text| serde_json::from_str::<IgnoredAny>(text).is_ok());
        json.then(|| ApiError::BadRequest(format!("bad request: {e}")))
    })
}

/// Reads a datagram: the fast [`scan`] when it can, serde_json otherwise.
pub fn parse(datagram: &[u8]) -> Parsed<'_> {
    match scan(datagram) {
        Some(request) => checked(request),
        None => parse_general(datagram),
    }
}

/// Reads a datagram with serde_json alone.
pub fn parse_general(datagram: &[u8]) -> Parsed<'_> {
    // A wrong shape may be met before a syntax error further on (`7 garbage`): only JSON is
    // answered, echoing the id if there is one to read.
    match read::<Request>(datagram) {
        Ok(request) => checked(request),
        Err(None) => Parsed::Garbage,
        Err(Some(error)) => {
            let value = serde_json::from_slice::<serde_json::Value>(datagram).ok();
            Parsed::Invalid {
                id: value.as_ref().and_then(echo_id),
                error,
            }
        }
    }
}

/// A request read, with its id held to [`MAX_ID`].
fn checked(request: Request<'_>) -> Parsed<'_> {
    if let Some(id) = &request.id
        && id.chars().count() > MAX_ID
    {
        return Parsed::Invalid {
            id: None,
            error: ApiError::BadRequest(format!("id is longer than {MAX_ID} characters")),
        };
    }
    Parsed::Request(request)
}

/// The usual request read in one pass, or `None` for serde_json to read: an object of the
/// known fields, each at most once, whose values are strings (an array of strings for
/// `assets`) without escapes, with JSON whitespace anywhere between tokens. Whatever it reads,
/// serde_json reads the same.
pub fn scan(datagram: &[u8]) -> Option<Request<'_>> {
    let mut s = Scanner {
        text: std::str::from_utf8(datagram).ok()?,
        at: 0,
    };
    let mut request = Request {
        key: Cow::Borrowed(""),
        asset: None,
        assets: None,
        source: None,
        id: None,
    };
    let mut key = None;
    s.token(b'{')?;
    loop {
        let field = s.string()?;
        s.token(b':')?;
        let slot = match field {
            "key" => &mut key,
            "asset" => &mut request.asset,
            "source" => &mut request.source,
            "id" => &mut request.id,
            // A second `assets` falls through to the refusal below, as a repeat of any field.
            "assets" if request.assets.is_none() => {
                request.assets = Some(s.strings()?);
                if s.end_of_field()? {
                    break;
                }
                continue;
            }
            _ => return None,
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(Cow::Borrowed(s.string()?));
        if s.end_of_field()? {
            break;
        }
    }
    s.skip_space();
    if s.at != datagram.len() {
        return None;
    }
    request.key = key.unwrap_or_default();
    Some(request)
}

/// A cursor over a datagram for [`scan`]; every step is `None` when the shape is not the usual.
struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    fn skip_space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.text.as_bytes().get(self.at) {
            self.at += 1;
        }
    }

    /// The next byte after whitespace, taken.
    fn next(&mut self) -> Option<u8> {
        self.skip_space();
        let b = *self.text.as_bytes().get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn token(&mut self, b: u8) -> Option<()> {
        (self.next()? == b).then_some(())
    }

    /// A string without escapes or control characters, borrowed from the datagram.
    fn string(&mut self) -> Option<&'a str> {
        self.token(b'"')?;
        let rest = self.text.get(self.at..)?;
        let len = memchr::memchr(b'"', rest.as_bytes())?;
        let string = rest.get(..len)?;
        // Folded without an early exit, so it runs many bytes at a time.
        let plain = string
            .bytes()
            .fold(true, |plain, b| plain & (b >= 0x20) & (b != b'\\'));
        self.at += len + 1;
        plain.then_some(string)
    }

    /// An array of such strings, perhaps empty.
    fn strings(&mut self) -> Option<Vec<Cow<'a, str>>> {
        self.token(b'[')?;
        let mut strings = Vec::new();
        self.skip_space();
        if self.text.as_bytes().get(self.at) == Some(&b']') {
            self.at += 1;
            return Some(strings);
        }
        loop {
            strings.push(Cow::Borrowed(self.string()?));
            match self.next()? {
                b']' => return Some(strings),
                b',' => {}
                _ => return None,
            }
        }
    }

    /// After a field's value: `true` at the closing brace, `false` at a comma.
    fn end_of_field(&mut self) -> Option<bool> {
        match self.next()? {
            b'}' => Some(true),
            b',' => Some(false),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Edge cases of the scan, each through serde_json too: the scan reads exactly what
    /// serde_json reads, or leaves the datagram to it.
    #[test]
    fn the_scan_takes_only_what_serde_json_reads_the_same() {
        let cases: &[(&[u8], bool)] = &[
            (br#"{"key":"k","asset":"BTC"}"#, true),
            (b" {\t\"key\" :\r\n\"k\" } \n", true),
            (br#"{"key":"k","assets":[]}"#, true),
            (br#"{"key":"k","assets":[ "A" ,"B" ]}"#, true),
            ("{\"key\":\"k\u{7f}é\"}".as_bytes(), true),
            (br#"{}"#, false),
            (br#"{"key":"k",}"#, false),
            (br#"{"key":"k","assets":["A",]}"#, false),
            (br#"{"key":"k","assets":[,"A"]}"#, false),
            (br#"{"key":"k","key":"k"}"#, false),
            (br#"{"assets":["A"],"assets":["A"]}"#, false),
            (br#"{"key":"k","asset":null}"#, false),
            (br#"{"key":"k","other":"x"}"#, false),
            (br#"{"key":"k\u0041"}"#, false),
            (br#"{"k\u0065y":"k"}"#, false),
            (b"{\"key\":\"a\tb\"}", false),
            (b"{\"key\":\"a\x00b\"}", false),
            (b"\xef\xbb\xbf{\"key\":\"k\"}", false),
            (b"{\"key\":\"k\"}\x0c", false),
            (b"{\"key\":\"\xff\"}", false),
            (br#"{"key":"k"}x"#, false),
            (br#"{"key":"k""#, false),
        ];
        for (datagram, scanned) in cases {
            let text = String::from_utf8_lossy(datagram);
            let general = serde_json::from_slice::<Request>(datagram).ok();
            match scan(datagram) {
                Some(request) => {
                    assert!(scanned, "scanned: {text}");
                    assert_eq!(Some(request), general, "{text}");
                }
                None => assert!(!scanned, "left to serde_json: {text}"),
            }
        }
    }

    #[test]
    fn requests_are_read_or_refused_with_a_reason() {
        let Parsed::Request(r) = parse(br#"{"key":"k","asset":"BTC","id":"1"}"#) else {
            panic!("valid request refused");
        };
        assert_eq!(
            (&*r.key, r.asset.as_deref(), r.id.as_deref()),
            ("k", Some("BTC"), Some("1"))
        );
        assert!(matches!(parse(b"\x00\xffnot json"), Parsed::Garbage));
        assert!(matches!(parse(br#"{"key":"k","asset":"#), Parsed::Garbage));
        // No key is for authentication to refuse (and count), as on HTTP.
        assert!(matches!(
            parse(br#"{"asset":"BTC","id":"9"}"#),
            Parsed::Request(ref r) if r.key.is_empty()
        ));
        assert!(matches!(
            parse(br#"{"key":"k","asset":42,"id":"x"}"#),
            Parsed::Invalid {
                id: Some(_),
                error: ApiError::BadRequest(_)
            }
        ));
        let long = format!(r#"{{"key":"k","asset":"BTC","id":"{}"}}"#, "x".repeat(65));
        assert!(matches!(
            parse(long.as_bytes()),
            Parsed::Invalid { id: None, .. }
        ));
        assert!(matches!(parse(b"[1,2]"), Parsed::Invalid { .. }));
        // JSON nested past serde_json's depth limit is still JSON: answered, not dropped.
        let deep = format!(
            r#"{{"key":{}1{},"id":"d"}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(matches!(
            parse(deep.as_bytes()),
            Parsed::Invalid {
                id: None,
                error: ApiError::BadRequest(_)
            }
        ));
        let cut = &deep.as_bytes()[..deep.len() - 1];
        assert!(matches!(parse(cut), Parsed::Garbage));
        // Nor is a string that is not UTF-8, though serde_json skips over it.
        assert!(matches!(parse(b"{\"key\":\"\xff\"}"), Parsed::Garbage));
        // Not JSON, though its start already has the wrong shape.
        assert!(matches!(parse(br#"7{"key":"k"}"#), Parsed::Garbage));
        assert!(matches!(
            parse(br#"{"key":true"k","asset":"BTC"}"#),
            Parsed::Garbage
        ));
    }
}
