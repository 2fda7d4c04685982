//! Reading one UDP request datagram into a [`Request`], made owned once it is handed to the
//! future that answers it. A request is a JSON object; JSON that is not a valid request is
//! still a [`Request`], carrying why it is refused, so that it is keyed, governed and metered
//! as any other (as HTTP keys a request before it reads its bad query); anything else is
//! garbage.
//!
//! Two readers, one answer: [`scan`] reads the usual shape (a flat object of the known fields,
//! plain strings, no escapes, no repeats) in one pass; anything else, and every error, is left
//! to serde_json ([`parse_general`]). A test holds the two to the same result over a fuzzed
//! corpus, and `cargo bench -p beast-api --bench udp_request` measures what the scan saves.

use std::borrow::Cow;

use beast_core::ApiError;
use serde::{Deserialize, de::IgnoredAny};
use serde_json::Value;

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
    /// Why the request is refused, when it is JSON but not a valid request: answered with
    /// this error once its key (if it has one to read) is checked, and metered to it.
    /// (Boxed: it is rare, and every request's answering future holds the field.)
    #[serde(skip)]
    pub refused: Option<Box<ApiError>>,
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
            refused: self.refused,
        }
    }

    /// JSON that is not a valid request, refused with `error`: its key and id are read from
    /// `json` where they are strings (and the id short enough to echo).
    fn refused(json: Option<&Value>, error: ApiError) -> Self {
        let text = |field| json.and_then(|v| v.get(field)).and_then(Value::as_str);
        Request {
            key: Cow::Owned(text("key").unwrap_or_default().to_owned()),
            asset: None,
            assets: None,
            source: None,
            id: json.and_then(echo_id).map(Cow::Owned),
            refused: Some(Box::new(error)),
        }
    }
}

/// The `id` of a JSON request to echo in its answer, if it has a readable one.
pub(crate) fn echo_id(request: &Value) -> Option<String> {
    request
        .get("id")
        .and_then(|i| i.as_str())
        .filter(|id| id.chars().count() <= MAX_ID)
        .map(str::to_owned)
}

/// A datagram read as a `T`, which a JSON object is read as; other JSON is the 400 to answer
/// it with, and anything else (`None`) is garbage, to drop. JSON is UTF-8 in JSON's grammar,
/// however deeply nested: serde_json skips over a value without the depth limit (128 levels)
/// its `Value` and typed readers keep, so a request nested deeper is answered, not dropped.
pub(crate) fn read<'a, T: Deserialize<'a>>(datagram: &'a [u8]) -> Result<T, Option<ApiError>> {
    // serde_json would read an array as a struct too, its elements as the fields in order.
    let message = if datagram.trim_ascii_start().starts_with(b"{") {
        match serde_json::from_slice(datagram) {
            Ok(read) => return Ok(read),
            // Cut short: JSON at no depth, with no second pass to say so.
            Err(e) if e.is_eof() => return Err(None),
            Err(e) => format!("bad request: {e}"),
        }
    } else {
        "bad request: a request is a JSON object".to_owned()
    };
    let json = std::str::from_utf8(datagram)
        .is_ok_and(|text| serde_json::from_str::<IgnoredAny>(text).is_ok());
    Err(json.then_some(ApiError::BadRequest(message)))
}

/// Reads a datagram: the fast [`scan`] when it can, serde_json otherwise; `None` for garbage.
pub fn parse(datagram: &[u8]) -> Option<Request<'_>> {
    match scan(datagram) {
        Some(request) => Some(checked(request)),
        None => parse_general(datagram),
    }
}

/// Reads a datagram with serde_json alone.
pub fn parse_general(datagram: &[u8]) -> Option<Request<'_>> {
    // A wrong shape may be met before a syntax error further on (`7 garbage`): only JSON is
    // answered.
    match read::<Request>(datagram) {
        Ok(request) => Some(checked(request)),
        Err(None) => None,
        Err(Some(error)) => {
            let json = serde_json::from_slice::<Value>(datagram).ok();
            Some(Request::refused(json.as_ref(), error))
        }
    }
}

/// A request read, refused if its id is longer than [`MAX_ID`] (and then not echoed).
fn checked(mut request: Request<'_>) -> Request<'_> {
    if request
        .id
        .as_ref()
        .is_some_and(|id| id.chars().count() > MAX_ID)
    {
        request.id = None;
        request.refused = Some(Box::new(ApiError::BadRequest(format!(
            "id is longer than {MAX_ID} characters"
        ))));
    }
    request
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
        refused: None,
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
        let Some(r) = parse(br#"{"key":"k","asset":"BTC","id":"1"}"#) else {
            panic!("valid request dropped");
        };
        assert_eq!(
            (&*r.key, r.asset.as_deref(), r.id.as_deref(), &r.refused),
            ("k", Some("BTC"), Some("1"), &None)
        );
        assert!(parse(b"\x00\xffnot json").is_none());
        assert!(parse(br#"{"key":"k","asset":"#).is_none());
        // No key is for authentication to refuse (and count), as on HTTP.
        let r = parse(br#"{"asset":"BTC","id":"9"}"#).unwrap();
        assert!(r.key.is_empty() && r.refused.is_none());
        // Refused, keeping the key and id it has (strings) for the answer to check and echo.
        let refused = |datagram: &[u8]| {
            let r = parse(datagram).expect("answered, not dropped");
            let code = r.refused.as_deref().map(ApiError::code);
            (r.key.into_owned(), r.id.map(Cow::into_owned), code)
        };
        let (k, x) = (String::from("k"), Some(String::from("x")));
        let bad = Some("bad_request");
        assert_eq!(
            refused(br#"{"key":"k","asset":42,"id":"x"}"#),
            (k.clone(), x.clone(), bad)
        );
        assert_eq!(
            refused(br#"{"key":"k","key":"k","id":"x"}"#),
            (k.clone(), x, bad)
        );
        assert_eq!(refused(br#"{"key":7,"id":8}"#), (String::new(), None, bad));
        let long = format!(r#"{{"key":"k","asset":"BTC","id":"{}"}}"#, "x".repeat(65));
        assert_eq!(refused(long.as_bytes()), (k.clone(), None, bad));
        // A request is an object: serde_json would read an array as the fields in order.
        for array in [&br#"["k","BTC"]"#[..], b" [1,2]", b"7", b"\"k\""] {
            assert_eq!(refused(array), (String::new(), None, bad));
        }
        // JSON nested past serde_json's depth limit is still JSON: answered, not dropped (its
        // key and id unread: `Value` stops at 128 levels).
        let deep = format!(
            r#"{{"key":"k","asset":{}1{},"id":"d"}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert_eq!(refused(deep.as_bytes()), (String::new(), None, bad));
        let cut = &deep.as_bytes()[..deep.len() - 1];
        assert!(parse(cut).is_none());
        // Nor is a string that is not UTF-8, though serde_json skips over it.
        assert!(parse(b"{\"key\":\"\xff\"}").is_none());
        // Not JSON, though its start already has the wrong shape.
        assert!(parse(br#"7{"key":"k"}"#).is_none());
        assert!(parse(br#"{"key":true"k","asset":"BTC"}"#).is_none());
    }
}
