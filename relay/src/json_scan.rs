//! Bounds on a JSON body that PostgreSQL would otherwise pay for: nesting depth and number
//! tokens. jsonb stores `1e131071` in a few bytes, but `jsonb_out` prints every number in full,
//! here as 131,072 digits: 1,500 of them in a 13.5 KB body took a backend to 580 MB when 0.2.0
//! printed every body, and still take the reader of a stored end-of-call report (kept whole)
//! to +972 MB (docs/SECURITY.md, review #3). The scan runs after the
//! syntax check (webhook.rs), so it reads valid JSON: one lexical pass, strings skipped with
//! `memchr`, numbers and brackets read byte by byte, and a path kept for the error message.

use std::fmt::Write;
use std::ops::Range;

/// The bounds (`--json-max-*`, config.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonLimits {
    /// Deepest nesting of arrays and objects; the top-level value is depth 1.
    pub max_depth: usize,
    /// Longest number token, in characters.
    pub max_number_length: usize,
    /// Largest |exponent| of one number.
    pub max_exponent: u64,
    /// Largest sum of |exponent| over the body's numbers: each exponent `e` adds up to |e|
    /// digits to the text PostgreSQL prints for the body.
    pub max_number_expansion: u64,
}

/// Why a body is refused, with the SQLSTATE PostgreSQL would give the same defect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excess {
    pub code: &'static str,
    pub message: String,
}

/// numeric_value_out_of_range: what PostgreSQL answers a number beyond `numeric`.
pub const NUMBER_CODE: &str = "22003";
/// program_limit_exceeded: what PostgreSQL answers a text over 1 GB, where the expansion leads.
pub const EXPANSION_CODE: &str = "54000";
/// statement_too_complex: what PostgreSQL's jsonb parser answers a body nested too deeply.
pub const DEPTH_CODE: &str = "54001";

/// Longest key shown in an error's path, in bytes.
const PATH_KEY_MAX: usize = 32;
/// Bytes of a string read one by one before `memchr` takes over.
const SHORT_STRING: usize = 32;
/// Longest number shown in an error message, in bytes.
const SHOWN_NUMBER_MAX: usize = 24;

/// Where the scan is: one frame per open array or object.
enum Frame {
    /// The object's current key, as written between its quotes; `None` until the first.
    Object {
        key: Option<Range<usize>>,
        expect_key: bool,
    },
    Array {
        index: usize,
    },
}

/// Checks `json` (valid JSON) against `limits`; the first excess found, in document order.
pub fn check(json: &str, limits: &JsonLimits) -> Result<(), Excess> {
    let bytes = json.as_bytes();
    let mut stack: Vec<Frame> = Vec::with_capacity(16);
    let mut expansion: u64 = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let end = string_end(bytes, i + 1);
                if let Some(Frame::Object { key, expect_key: expect @ true }) = stack.last_mut() {
                    *key = Some(i + 1..end);
                    *expect = false;
                }
                i = end + 1;
            }
            b'{' | b'[' => {
                if stack.len() == limits.max_depth {
                    return Err(Excess {
                        code: DEPTH_CODE,
                        message: format!(
                            "{}: nested deeper than the limit of {} levels",
                            path(json, &stack),
                            limits.max_depth
                        ),
                    });
                }
                stack.push(if bytes[i] == b'{' {
                    Frame::Object { key: None, expect_key: true }
                } else {
                    Frame::Array { index: 0 }
                });
                i += 1;
            }
            b'}' | b']' => {
                stack.pop();
                i += 1;
            }
            b',' => {
                match stack.last_mut() {
                    Some(Frame::Array { index }) => *index += 1,
                    Some(Frame::Object { expect_key, .. }) => *expect_key = true,
                    None => {}
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let (end, exponent) = number_end(bytes, i);
                let at = || path(json, &stack);
                let length = end - i;
                if length > limits.max_number_length {
                    return Err(Excess {
                        code: NUMBER_CODE,
                        message: format!(
                            "{}: number literal of {length} characters; the limit is {}",
                            at(),
                            limits.max_number_length
                        ),
                    });
                }
                if exponent > limits.max_exponent {
                    return Err(Excess {
                        code: NUMBER_CODE,
                        message: format!(
                            "{}: number {} has an exponent of magnitude {exponent}; the limit is {}",
                            at(),
                            &json[i..end.min(i + SHOWN_NUMBER_MAX)],
                            limits.max_exponent
                        ),
                    });
                }
                expansion += exponent;
                if expansion > limits.max_number_expansion {
                    return Err(Excess {
                        code: EXPANSION_CODE,
                        message: format!(
                            "{}: the exponents of the numbers up to here add {expansion} digits to the body as \
                             PostgreSQL prints it; the limit is {}",
                            at(),
                            limits.max_number_expansion
                        ),
                    });
                }
                i = end;
            }
            // whitespace, ':', and the letters of true / false / null
            _ => i += 1,
        }
    }
    Ok(())
}

/// The index of the quote that closes the string whose contents start at `from`. Most strings
/// of a Vapi body are short (words, roles, ids), where a `memchr` call costs more than it saves:
/// a byte loop reads the first [`SHORT_STRING`] bytes, `memchr` the rest (transcripts).
fn string_end(bytes: &[u8], mut from: usize) -> usize {
    let short_end = (from + SHORT_STRING).min(bytes.len());
    while from < short_end {
        match bytes[from] {
            b'"' => return from,
            b'\\' => from += 2,
            _ => from += 1,
        }
    }
    while from < bytes.len() {
        match memchr::memchr2(b'"', b'\\', &bytes[from..]) {
            Some(at) if bytes[from + at] == b'\\' => from += at + 2,
            Some(at) => return from + at,
            None => break,
        }
    }
    // valid JSON closes every string
    bytes.len()
}

/// The end of the number token at `start`, and the magnitude of its exponent (saturating).
fn number_end(bytes: &[u8], start: usize) -> (usize, u64) {
    let digits = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let mut i = digits(start + usize::from(bytes[start] == b'-'));
    if bytes.get(i) == Some(&b'.') {
        i = digits(i + 1);
    }
    let mut exponent: u64 = 0;
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(bytes.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let end = digits(i);
        for &d in &bytes[i..end] {
            exponent = exponent.saturating_mul(10).saturating_add(u64::from(d - b'0'));
        }
        i = end;
    }
    (i, exponent)
}

/// The path of the value the scan is at, as `message.x[3]`; keys as written, clipped.
fn path(json: &str, stack: &[Frame]) -> String {
    let mut out = String::new();
    for frame in stack {
        match frame {
            Frame::Object { key: Some(key), .. } => {
                let key = &json[key.clone()];
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&key[..key.floor_char_boundary(PATH_KEY_MAX)]);
            }
            Frame::Object { key: None, .. } => {}
            Frame::Array { index } => {
                let _ = write!(out, "[{index}]");
            }
        }
    }
    if out.is_empty() {
        out.push_str("the top-level value");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: JsonLimits =
        JsonLimits { max_depth: 64, max_number_length: 100, max_exponent: 400, max_number_expansion: 1024 * 1024 };

    fn excess(json: &str) -> Excess {
        serde_json::from_str::<serde::de::IgnoredAny>(json).expect("the scan reads valid JSON");
        check(json, &LIMITS).expect_err(json)
    }

    #[test]
    fn numbers_of_real_messages_pass() {
        for json in [
            r#"{"message":{"timestamp":1732540000123,"confidence":0.82,"cost":1.5e-7,"n":-0,"big":1.7976931348623157e+308}}"#,
            "[5e-324,-1E400,1e+400,0.30000000000000004]",
            "12",
            r#""1e131071""#,
            r#"{"text":"[[[[ 1e131071 \" ]]]] \\","x":[true,false,null]}"#,
        ] {
            assert_eq!(check(json, &LIMITS), Ok(()), "{json}");
        }
    }

    #[test]
    fn a_huge_exponent_is_refused_with_its_path() {
        let e = excess(r#"{"message":{"type":"speech-update","x":[1,2.5,3,1e131071,1e131071]}}"#);
        assert_eq!(e.code, "22003");
        assert_eq!(e.message, "message.x[3]: number 1e131071 has an exponent of magnitude 131071; the limit is 400");
        for json in ["[1E-401]", "[1e+401]", "[-2.5e00000000000000000000000000000000401]"] {
            assert!(excess(json).message.contains("exponent of magnitude 401"), "{json}");
        }
        let saturated = excess(&format!("[1e{}]", "9".repeat(40)));
        assert!(saturated.message.contains(&u64::MAX.to_string()), "{}", saturated.message);
    }

    #[test]
    fn a_long_number_is_refused() {
        let e = excess(&format!(r#"{{"a":{{"b":[0,{{"c":0.{}1}}]}}}}"#, "0".repeat(200)));
        assert_eq!(e.code, "22003");
        assert_eq!(e.message, "a.b[1].c: number literal of 203 characters; the limit is 100");
        assert_eq!(check(&format!("[{}]", "9".repeat(100)), &LIMITS), Ok(()), "100 characters pass");
    }

    #[test]
    fn many_exponents_together_are_refused() {
        let under = format!("[{}]", vec!["1e400"; 2621].join(","));
        assert_eq!(check(&under, &LIMITS), Ok(()), "2,621 x 400 = 1,048,400 digits");
        let over = format!("[{}]", vec!["1e400"; 2622].join(","));
        let e = excess(&over);
        assert_eq!(e.code, "54000");
        assert!(e.message.starts_with("[2621]: the exponents of the numbers up to here add 1048800 digits"), "{e:?}");
    }

    #[test]
    fn nesting_past_the_limit_is_refused() {
        let nested = |n: usize| format!(r#"{{"m":{}1{}}}"#, "[".repeat(n - 1), "]".repeat(n - 1));
        assert_eq!(check(&nested(64), &LIMITS), Ok(()), "64 levels pass");
        let e = excess(&nested(65));
        assert_eq!(e.code, "54001");
        assert_eq!(e.message, format!("m{}: nested deeper than the limit of 64 levels", "[0]".repeat(63)));
        let e = excess(&format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)));
        assert_eq!(e.code, "54001");
    }

    #[test]
    fn paths_show_keys_as_written_and_clipped() {
        let key = "k".repeat(40);
        let e = excess(&format!(r#"{{"a\"b":{{"{key}":[[0],[1,{{"x":1,"y":1e999}}]]}}}}"#));
        assert_eq!(
            e.message,
            format!(
                r#"a\"b.{}[1][1].y: number 1e999 has an exponent of magnitude 999; the limit is 400"#,
                "k".repeat(32)
            )
        );
        assert!(excess("1e999").message.starts_with("the top-level value: "));
    }
}
