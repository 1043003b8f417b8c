//! The webhook contract as the documentation states it, as a classifier: given a body, what
//! `handle_vapi_message` (and the relay in front of it) must answer, decided before the body is
//! sent and without calling the product.
//!
//! Written from README.md ("Vapi messages", "Errors (SQLSTATE)", "Input limits"),
//! docs/ARCHITECTURE.md (hops: the `::jsonb` cast, decode (hop 6), validation (hop 8), the
//! tenant statement (hop 10)) and relay/README.md ("Outcome mapping"). Where the documents are
//! silent the rule chosen is marked `reading:`: gaps of the documentation to be settled there,
//! not facts the documents state.
//!
//! A body has zero or more defects. With several, the product may report any one of those of
//! the earliest stage (the cast, then the decode of the message's JSON types, then each value's
//! rules, then the tenant lookup, which is the statement itself): the stages are the hops the
//! architecture documents, the order inside a stage is not documented.
//!
//! The JSON parser below is the classifier's own (PostgreSQL's jsonb input rules: `\u0000` is
//! 22P05, a lone surrogate 22P02, duplicate keys keep the last value, numbers of any size), so
//! it can read bodies serde_json cannot hold.

use std::fmt;

use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Documented limits (README "Input limits")

pub const ID_MAX: usize = 255;
pub const PHONE_MAX: usize = 64;
pub const SHORT_TEXT_MAX: usize = 255;
pub const LINE_MAX: usize = 32 * 1024;
pub const SUMMARY_MAX: usize = 64 * 1024;
pub const TRANSCRIPT_MAX: usize = 1024 * 1024;
pub const URL_MAX: usize = 2048;
pub const DURATION_MAX: f64 = 604_800.0;
pub const COST_MAX: f64 = 1_000_000.0;
/// relay/README.md: `--body-limit` default, 16 MiB; larger is 413.
pub const BODY_LIMIT: usize = 16 * 1024 * 1024;
/// The documents name no nesting limit ("body nested too deeply for the jsonb parser": 54001).
/// reading: PostgreSQL's limit follows `max_stack_depth` (2 MB by default); nesting up to this
/// depth parses, deeper is 54001. The generators stay far from it (≤ 5,000) or far beyond it.
pub const NESTING_OK: usize = 10_000;

pub const STATUSES: &[&str] = &["scheduled", "queued", "ringing", "in-progress", "forwarding", "ended"];
pub const ROLES: &[&str] = &["user", "assistant"];
pub const TRANSCRIPT_TYPES: &[&str] = &["partial", "final"];
pub const FINAL_TYPE_NAME: &str = "transcript[transcriptType=\"final\"]";
/// What call.endpointing.request is answered with when the app does not answer (README).
pub const ENDPOINTING_SECONDS: f64 = 0.4;

// ---------------------------------------------------------------------------------------------
// A JSON document as jsonb holds it

#[derive(Debug, Clone, PartialEq)]
pub enum J {
    Null,
    Bool(bool),
    /// The number as written (jsonb keeps it exactly).
    Num(String),
    Str(String),
    Arr(Vec<J>),
    /// Keys in document order; a repeated key keeps its last value (jsonb).
    Obj(Vec<(String, J)>),
}

/// Dropped iteratively: a deep document would overflow the stack otherwise.
impl Drop for J {
    fn drop(&mut self) {
        fn children(j: &mut J, out: &mut Vec<J>) {
            match j {
                J::Arr(items) => out.append(items),
                J::Obj(entries) => out.extend(entries.drain(..).map(|(_, v)| v)),
                _ => {}
            }
        }
        let mut stack = Vec::new();
        children(self, &mut stack);
        while let Some(mut j) = stack.pop() {
            children(&mut j, &mut stack);
        }
    }
}

impl J {
    pub fn get(&self, key: &str) -> Option<&J> {
        match self {
            J::Obj(entries) => entries.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string at `key`, if it is one (its JSON type is the Reader's to judge).
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(J::Str(s)) => Some(s),
            _ => None,
        }
    }
}

/// Why the `$1::text::jsonb` cast refuses a text, and its SQLSTATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CastError {
    /// Not JSON (22P02); the relay's JSON check answers 400 for these.
    Syntax,
    /// `\u0000`: jsonb cannot hold it (22P05).
    Nul,
    /// A lone or misordered UTF-16 surrogate escape (22P02).
    Surrogate,
    /// Nested beyond the parser's stack (54001).
    TooDeep,
    /// A number beyond `numeric` (22003).
    NumericOverflow,
}

impl CastError {
    pub fn sqlstate(self) -> &'static str {
        match self {
            CastError::Syntax | CastError::Surrogate => "22P02",
            CastError::Nul => "22P05",
            CastError::TooDeep => "54001",
            CastError::NumericOverflow => "22003",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            CastError::Syntax => "not JSON",
            CastError::Nul => "\\u0000",
            CastError::Surrogate => "lone surrogate",
            CastError::TooDeep => "nesting too deep",
            CastError::NumericOverflow => "number beyond numeric",
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
    /// Syntax only (the relay's check): what only jsonb refuses is accepted.
    syntax_only: bool,
}

/// Parse `text` as jsonb input does.
pub fn parse(text: &str) -> Result<J, CastError> {
    parse_with(text, false)
}

/// Whether `text` is JSON at all (the relay's check: syntax only; `\u0000`, lone surrogates,
/// depth and numeric range are the database's to judge).
pub fn is_json(text: &str) -> bool {
    parse_with(text, true).is_ok()
}

fn parse_with(text: &str, syntax_only: bool) -> Result<J, CastError> {
    let mut p = Parser { s: text.as_bytes(), i: 0, depth: 0, syntax_only };
    p.ws();
    let v = p.value()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(CastError::Syntax);
    }
    Ok(v)
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// One value, iteratively (a body may nest thousands of levels deep).
    fn value(&mut self) -> Result<J, CastError> {
        enum Frame {
            Arr(Vec<J>),
            Obj(Vec<(String, J)>, String),
        }
        let mut stack: Vec<Frame> = Vec::new();
        loop {
            // the start of a value
            self.ws();
            let mut value = match self.peek().ok_or(CastError::Syntax)? {
                b'{' => {
                    self.nest()?;
                    self.i += 1;
                    self.ws();
                    if self.peek() == Some(b'}') {
                        self.i += 1;
                        self.depth -= 1;
                        J::Obj(Vec::new())
                    } else {
                        let key = self.key()?;
                        stack.push(Frame::Obj(Vec::new(), key));
                        continue;
                    }
                }
                b'[' => {
                    self.nest()?;
                    self.i += 1;
                    self.ws();
                    if self.peek() == Some(b']') {
                        self.i += 1;
                        self.depth -= 1;
                        J::Arr(Vec::new())
                    } else {
                        stack.push(Frame::Arr(Vec::new()));
                        continue;
                    }
                }
                b'"' => J::Str(self.string()?),
                b't' => self.literal("true", J::Bool(true))?,
                b'f' => self.literal("false", J::Bool(false))?,
                b'n' => self.literal("null", J::Null)?,
                b'-' | b'0'..=b'9' => self.number()?,
                _ => return Err(CastError::Syntax),
            };
            // a whole value: into its container, closing the containers it completes
            loop {
                match stack.last_mut() {
                    None => return Ok(value),
                    Some(Frame::Arr(items)) => {
                        items.push(value);
                        self.ws();
                        match self.peek() {
                            Some(b',') => {
                                self.i += 1;
                                break;
                            }
                            Some(b']') => {
                                self.i += 1;
                                self.depth -= 1;
                                let Some(Frame::Arr(items)) = stack.pop() else { unreachable!() };
                                value = J::Arr(items);
                            }
                            _ => return Err(CastError::Syntax),
                        }
                    }
                    Some(Frame::Obj(entries, key)) => {
                        entries.push((std::mem::take(key), value));
                        self.ws();
                        match self.peek() {
                            Some(b',') => {
                                self.i += 1;
                                self.ws();
                                *key = self.key()?;
                                break;
                            }
                            Some(b'}') => {
                                self.i += 1;
                                self.depth -= 1;
                                let Some(Frame::Obj(entries, _)) = stack.pop() else { unreachable!() };
                                value = J::Obj(entries);
                            }
                            _ => return Err(CastError::Syntax),
                        }
                    }
                }
            }
        }
    }

    /// `"key" :`
    fn key(&mut self) -> Result<String, CastError> {
        if self.peek() != Some(b'"') {
            return Err(CastError::Syntax);
        }
        let k = self.string()?;
        self.ws();
        if self.peek() != Some(b':') {
            return Err(CastError::Syntax);
        }
        self.i += 1;
        Ok(k)
    }

    fn nest(&mut self) -> Result<(), CastError> {
        self.depth += 1;
        if self.depth > NESTING_OK && !self.syntax_only {
            return Err(CastError::TooDeep);
        }
        Ok(())
    }

    /// A problem of jsonb, not of JSON: an error, unless only the syntax is checked.
    fn jsonb_only(&self, e: CastError) -> Result<(), CastError> {
        if self.syntax_only {
            Ok(())
        } else {
            Err(e)
        }
    }

    fn literal(&mut self, word: &str, v: J) -> Result<J, CastError> {
        let end = self.i + word.len();
        if self.s.get(self.i..end) != Some(word.as_bytes()) {
            return Err(CastError::Syntax);
        }
        self.i = end;
        if self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_') {
            return Err(CastError::Syntax);
        }
        Ok(v)
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Result<J, CastError> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let int_start = self.i;
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(CastError::Syntax),
        }
        let int_digits = &self.s[int_start..self.i];
        let mut frac: &[u8] = &[];
        if self.peek() == Some(b'.') {
            self.i += 1;
            let f = self.i;
            if self.digits() == 0 {
                return Err(CastError::Syntax);
            }
            frac = &self.s[f..self.i];
        }
        let mut exp: i64 = 0;
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            let neg = match self.peek() {
                Some(b'-') => {
                    self.i += 1;
                    true
                }
                Some(b'+') => {
                    self.i += 1;
                    false
                }
                _ => false,
            };
            let e = self.i;
            if self.digits() == 0 {
                return Err(CastError::Syntax);
            }
            let text = std::str::from_utf8(&self.s[e..self.i]).unwrap();
            exp = text.parse::<i64>().unwrap_or(i64::MAX).min(i64::MAX / 4);
            if neg {
                exp = -exp;
            }
        }
        if self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.') {
            return Err(CastError::Syntax);
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).unwrap().to_string();
        // numeric: at most 131072 digits before the point and 16383 after
        let all_zero = int_digits.iter().chain(frac).all(|&c| c == b'0');
        if !all_zero {
            let lead = int_digits.iter().take_while(|&&c| c == b'0').count();
            let int_len = (int_digits.len() - lead) as i64;
            if (int_len + exp > 131_072 || frac.len() as i64 - exp > 16_383) && !self.syntax_only {
                return Err(CastError::NumericOverflow);
            }
        } else if frac.len() as i64 - exp > 16_383 && !self.syntax_only {
            return Err(CastError::NumericOverflow);
        }
        Ok(J::Num(text))
    }

    fn hex4(&mut self) -> Result<u32, CastError> {
        let h = self.s.get(self.i..self.i + 4).ok_or(CastError::Syntax)?;
        let t = std::str::from_utf8(h).map_err(|_| CastError::Syntax)?;
        if !t.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(CastError::Syntax);
        }
        self.i += 4;
        Ok(u32::from_str_radix(t, 16).unwrap())
    }

    fn string(&mut self) -> Result<String, CastError> {
        self.i += 1; // the opening quote
        let mut out = String::new();
        let mut high: Option<u32> = None;
        loop {
            let c = self.peek().ok_or(CastError::Syntax)?;
            if high.is_some() && c != b'\\' {
                // a high surrogate not followed by an escape
                self.jsonb_only(CastError::Surrogate)?;
                high = None;
            }
            match c {
                b'"' => {
                    self.i += 1;
                    return Ok(out);
                }
                0..=0x1f => return Err(CastError::Syntax),
                b'\\' => {
                    self.i += 1;
                    let e = self.peek().ok_or(CastError::Syntax)?;
                    self.i += 1;
                    if e != b'u' && high.is_some() {
                        self.jsonb_only(CastError::Surrogate)?;
                        high = None;
                    }
                    let ch = match e {
                        b'u' => {
                            let cp = self.hex4()?;
                            if (0xd800..=0xdbff).contains(&cp) {
                                if high.is_some() {
                                    self.jsonb_only(CastError::Surrogate)?;
                                }
                                high = Some(cp);
                                continue;
                            }
                            let cp = if (0xdc00..=0xdfff).contains(&cp) {
                                match high.take() {
                                    Some(h) => 0x10000 + ((h - 0xd800) << 10) + (cp - 0xdc00),
                                    None => {
                                        self.jsonb_only(CastError::Surrogate)?;
                                        continue;
                                    }
                                }
                            } else {
                                if high.take().is_some() {
                                    self.jsonb_only(CastError::Surrogate)?;
                                }
                                cp
                            };
                            if cp == 0 {
                                self.jsonb_only(CastError::Nul)?;
                                continue;
                            }
                            char::from_u32(cp).unwrap_or('\u{fffd}')
                        }
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        _ => return Err(CastError::Syntax),
                    };
                    out.push(ch);
                }
                _ => {
                    // a run of plain characters (the input is a &str, so it is whole UTF-8)
                    let start = self.i;
                    while self.peek().is_some_and(|c| c >= 0x20 && c != b'"' && c != b'\\') {
                        self.i += 1;
                    }
                    out.push_str(std::str::from_utf8(&self.s[start..self.i]).map_err(|_| CastError::Syntax)?);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Who owns which ids

/// An agent as registered with `upsert_agent`.
#[derive(Debug, Clone)]
pub struct Agent {
    pub org: Uuid,
    pub assistant: String,
    pub phone: Option<String>,
    pub active: bool,
}

/// The agents the classifier knows of: the tenant is the org of the active agent of the route
/// id (README "Tenant"; an org id in the body is never read).
#[derive(Debug, Clone, Default)]
pub struct World {
    pub agents: Vec<Agent>,
}

impl World {
    pub fn by_assistant(&self, id: &str) -> Option<Uuid> {
        self.agents.iter().find(|a| a.active && a.assistant == id).map(|a| a.org)
    }

    pub fn by_phone(&self, id: &str) -> Option<Uuid> {
        self.agents.iter().find(|a| a.active && a.phone.as_deref() == Some(id)).map(|a| a.org)
    }
}

// ---------------------------------------------------------------------------------------------
// The prediction

/// Where a defect stops a body (docs/ARCHITECTURE.md "One message, hop by hop").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// The relay's size and JSON checks (HTTP only).
    Relay,
    /// `$1::text::jsonb`.
    Cast,
    /// hop 6: the message's JSON shape.
    Decode,
    /// hop 8: each value's rules.
    Validate,
    /// hop 10: the tenant statement (no active agent: 42704).
    Tenant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defect {
    pub stage: Stage,
    /// The field as sent (a JSON path); empty where none is promised (the cast, the relay).
    pub field: String,
    pub sqlstate: &'static str,
    /// For the figures: what kind of defect.
    pub kind: &'static str,
}

impl fmt::Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{} ({})", self.sqlstate, self.kind)
        } else {
            write!(f, "{} {} ({})", self.sqlstate, self.field, self.kind)
        }
    }
}

/// What a handled message does once applied: its idempotency key (README "Exactly once").
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Event {
    /// `status:<call>:<status>`: applied or stale the first time, duplicate after.
    Status(String),
    /// `report:<call>`: applied the first time, duplicate after.
    Report(String),
    /// A transcript line: (call, role, spoken_at µs, text); applied once, duplicate after.
    Line { call: String, role: String, micros: i64, text: String },
    /// A conversation-update of a call: applied when one of its lines is new, else duplicate.
    Lines { call: String },
}

/// A line a message list gives: its key, and when its words ended (µs; `endTime`, else `time`).
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub line: Event,
    pub ended: i64,
}

/// README "Transcripts": a provisional line sent at `sent` (µs) is the utterance a listed line
/// spoke from `began` to `ended` when sent after the words began and at most 10 s after they ended.
pub fn heard_during(sent: i64, began: i64, ended: i64) -> bool {
    sent >= began && sent - ended <= 10_000_000
}

#[derive(Debug, Clone, PartialEq)]
pub enum Prediction {
    /// Handled: answered applied / duplicate / stale, naming `org`; `lines` are the transcript
    /// lines its lists carry (a conversation-update's, a report's messages, a transcript's own
    /// artifact), each stored once. A `provisional` event is a transcript line no list of its
    /// message gave: a listed line of the same utterance replaces it (README "Transcripts").
    Valid { org: Uuid, message_type: String, call: String, event: Event, provisional: bool, lines: Vec<Listed> },
    /// A type Vapi takes the answer of as its reply: `{"reply": <reply>, "upstream": …}`,
    /// naming `org` when the database knows it (README "Replies").
    Reply { message_type: String, org: Option<Uuid>, reply: String, upstream: bool },
    /// Acknowledged: `{"applied": false, "ignored": <label>}`.
    Ignored { label: String },
    /// Refused: any one of `defects` (all of the same, earliest stage).
    Invalid { defects: Vec<Defect> },
}

impl Prediction {
    /// Whether the body gets past the cast into `handle_vapi_message`.
    pub fn reaches_statement(&self) -> bool {
        match self {
            Prediction::Invalid { defects } => defects[0].stage > Stage::Cast,
            _ => true,
        }
    }

    /// A short label for the figures: the message kind of a valid body, the defect kind of an
    /// invalid one (`several` when it has more than one).
    pub fn label(&self) -> String {
        match self {
            Prediction::Valid { message_type, .. } => message_type.clone(),
            Prediction::Reply { message_type, .. } => format!("reply {message_type}"),
            Prediction::Ignored { label } => format!("ignored {}", clip(label, 40)),
            Prediction::Invalid { defects } if defects.len() == 1 => defects[0].kind.to_string(),
            Prediction::Invalid { .. } => "several".into(),
        }
    }

    /// Whether a refusal (`code`, `message`) is one the prediction allows: the code of one of
    /// the defects, and, where the README promises it, the message names that defect's field
    /// as it was sent.
    pub fn allows_error(&self, code: &str, message: &str) -> bool {
        let Prediction::Invalid { defects } = self else { return false };
        defects.iter().any(|d| d.sqlstate == code && names_field(message, &d.field))
    }

    pub fn describe(&self) -> String {
        match self {
            Prediction::Valid { org, message_type, call, .. } => {
                format!("valid {message_type} of org {org} call {}", clip(call, 60))
            }
            Prediction::Reply { message_type, reply, upstream, .. } => {
                format!("reply {message_type} {reply} upstream={upstream}")
            }
            Prediction::Ignored { label } => format!("ignored {label}"),
            Prediction::Invalid { defects } => {
                let d: Vec<String> = defects.iter().map(|d| d.to_string()).collect();
                format!("one of [{}]", d.join(", "))
            }
        }
    }
}

/// `message` names `field` as a whole path: followed by a space, a quote or the end.
fn names_field(message: &str, field: &str) -> bool {
    if field.is_empty() {
        return true;
    }
    message.match_indices(field).any(|(i, _)| {
        let after = &message[i + field.len()..];
        let before_ok = i == 0 || message[..i].ends_with(' ');
        before_ok && (after.is_empty() || after.starts_with(' ') || after.starts_with('\''))
    })
}

fn clip(s: &str, n: usize) -> &str {
    let mut end = s.len().min(n);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The relay's answer (relay/README.md "Outcome mapping").
#[derive(Debug, Clone, PartialEq)]
pub enum HttpPrediction {
    /// 413: over the body limit.
    TooLarge,
    /// 400: not UTF-8, or not JSON.
    NotJson,
    /// 200 with the function's answer, or 422 with one of the defects' codes.
    Db(Prediction),
}

impl HttpPrediction {
    pub fn status(&self) -> u16 {
        match self {
            HttpPrediction::TooLarge => 413,
            HttpPrediction::NotJson => 400,
            HttpPrediction::Db(Prediction::Invalid { .. }) => 422,
            HttpPrediction::Db(_) => 200,
        }
    }
}

/// What the relay answers `body` (checked in the documented order: size, authentication —
/// always right here —, UTF-8 and JSON syntax, the JSON bounds, then the statement).
pub fn classify_http(world: &World, body: &[u8]) -> HttpPrediction {
    if body.len() > BODY_LIMIT {
        return HttpPrediction::TooLarge;
    }
    let Ok(text) = std::str::from_utf8(body) else { return HttpPrediction::NotJson };
    if !is_json(text) {
        return HttpPrediction::NotJson;
    }
    // past the relay's bounds: refused (422, stored) before the database sees it; within them,
    // what the cast refuses beyond syntax (`\u0000`, a lone surrogate, numeric range) is the
    // database's to answer (422)
    let excess = relay_bounds(text);
    if excess.is_empty() {
        HttpPrediction::Db(classify(world, text))
    } else {
        HttpPrediction::Db(Prediction::Invalid { defects: excess })
    }
}

/// relay/README.md "Limits", defaults: nesting (the top-level value is depth 1), a number's
/// length in characters, one number's |exponent|, the sum of |exponent| over the body.
pub const RELAY_DEPTH_MAX: usize = 64;
pub const RELAY_NUMBER_LENGTH_MAX: usize = 100;
pub const RELAY_EXPONENT_MAX: u64 = 400;
pub const RELAY_EXPANSION_MAX: u64 = 1024 * 1024;

/// Every bound `text` (valid JSON) passes, as defects; the relay names the first it meets, so any
/// one of them is a right answer.
fn relay_bounds(text: &str) -> Vec<Defect> {
    let defect = |sqlstate, kind| Defect { stage: Stage::Relay, field: String::new(), sqlstate, kind };
    let (mut depth, mut deepest, mut expansion) = (0usize, 0usize, 0u64);
    let (mut long, mut large) = (false, false);
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth -= 1,
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < b.len() && matches!(b[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                    i += 1;
                }
                let token = &text[start..i];
                long |= token.len() > RELAY_NUMBER_LENGTH_MAX;
                let exponent = token
                    .split_once(['e', 'E'])
                    .map_or(0, |(_, e)| e.trim_start_matches(['+', '-']).parse::<u64>().unwrap_or(u64::MAX));
                large |= exponent > RELAY_EXPONENT_MAX;
                expansion = expansion.saturating_add(exponent);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    let mut defects = Vec::new();
    if deepest > RELAY_DEPTH_MAX {
        defects.push(defect("54001", "nested past the relay's bound"));
    }
    if long || large {
        defects.push(defect("22003", "a number past the relay's bounds"));
    }
    if expansion > RELAY_EXPANSION_MAX {
        defects.push(defect("54000", "numbers expanding past the relay's bound"));
    }
    defects
}

// ---------------------------------------------------------------------------------------------
// The classifier

struct Reader {
    defects: Vec<Defect>,
}

impl Reader {
    fn add(&mut self, stage: Stage, field: impl Into<String>, sqlstate: &'static str, kind: &'static str) {
        self.defects.push(Defect { stage, field: field.into(), sqlstate, kind });
    }

    fn wrong_type(&mut self, field: impl Into<String>) {
        self.add(Stage::Decode, field, "22023", "wrong JSON type");
    }

    /// A text field: a string, or absent / null (README: a missing field and null are the same,
    /// `… must not be null`). Anything else is the wrong JSON type (22023).
    fn text<'j>(&mut self, parent: Option<&'j J>, path: &str, key: &str) -> Option<&'j str> {
        match parent.and_then(|p| p.get(key)) {
            None | Some(J::Null) => None,
            Some(J::Str(s)) => Some(s),
            Some(_) => {
                self.wrong_type(format!("{path}.{key}"));
                None
            }
        }
    }

    /// An object field. reading: the README's "webhook field of the wrong JSON type" covers an
    /// array where an object belongs.
    fn object<'j>(&mut self, parent: Option<&'j J>, path: &str, key: &str) -> Option<&'j J> {
        match parent.and_then(|p| p.get(key)) {
            None | Some(J::Null) => None,
            Some(o @ J::Obj(_)) => Some(o),
            Some(_) => {
                self.wrong_type(format!("{path}.{key}"));
                None
            }
        }
    }

    /// A number field. reading: a number the product cannot hold as a double (beyond ±1.8e308)
    /// is the wrong JSON shape (22023), as the regression tests of this suite require; the
    /// README's 22003 ("too large cost") is for numbers that can be read.
    fn number(&mut self, parent: Option<&J>, path: &str, key: &str) -> Option<f64> {
        match parent.and_then(|p| p.get(key)) {
            None | Some(J::Null) => None,
            Some(J::Num(n)) => match n.parse::<f64>() {
                Ok(f) if f.is_finite() => Some(f),
                _ => {
                    self.wrong_type(format!("{path}.{key}"));
                    None
                }
            },
            Some(_) => {
                self.wrong_type(format!("{path}.{key}"));
                None
            }
        }
    }

    /// `message.timestamp`: epoch milliseconds (a number) or ISO-8601 (a string).
    fn timestamp(&mut self, msg: &J) -> Option<Moment> {
        match msg.get("timestamp") {
            None | Some(J::Null) => None,
            Some(J::Num(n)) => match n.parse::<f64>() {
                Ok(f) if f.is_finite() => Some(Moment::Millis(f)),
                _ => {
                    self.wrong_type("message.timestamp");
                    None
                }
            },
            Some(J::Str(s)) => Some(Moment::Iso(s.clone())),
            Some(_) => {
                self.wrong_type("message.timestamp");
                None
            }
        }
    }

    /// A text with a limit: "" is "not given" for optional fields (reading: the README does not
    /// say; an empty optional value is treated as absent), over the limit is 22001.
    fn optional<'a>(&mut self, field: &str, value: Option<&'a str>, max: usize) -> Option<&'a str> {
        match value {
            None | Some("") => None,
            Some(v) if v.len() > max => {
                self.add(Stage::Validate, field, "22001", "too long");
                None
            }
            Some(v) => Some(v),
        }
    }

    /// A required text: missing 22004, empty 22023, over the limit 22001.
    fn required<'a>(&mut self, field: &str, value: Option<&'a str>, max: usize) -> Option<&'a str> {
        match value {
            None => {
                self.add(Stage::Validate, field, "22004", "missing");
                None
            }
            Some("") => {
                self.add(Stage::Validate, field, "22023", "empty");
                None
            }
            v => self.optional(field, v, max),
        }
    }

    fn one_of<'a>(&mut self, field: &str, value: Option<&'a str>, allowed: &[&str]) -> Option<&'a str> {
        match value {
            Some(v) if !allowed.contains(&v) => {
                self.add(Stage::Validate, field, "22023", "invalid value");
                None
            }
            v => v,
        }
    }

    fn amount(&mut self, field: &str, value: Option<f64>, max: f64) {
        if let Some(v) = value {
            if !(0.0..=max).contains(&v) {
                self.add(Stage::Validate, field, "22003", "out of range");
            }
        }
    }

    fn moment(&mut self, field: &str, m: &Moment) -> Option<i64> {
        let micros = m.micros();
        if micros.is_none() {
            self.add(Stage::Validate, field, "22007", "bad timestamp");
        }
        micros
    }
}

/// A webhook timestamp.
#[derive(Debug, Clone)]
pub enum Moment {
    Millis(f64),
    Iso(String),
}

/// PostgreSQL's timestamptz range in microseconds since 1970: 4714-11-24 BC to 294276 AD.
const PG_MIN_UNIX_MICROS: f64 = -210_866_803_200_000_000.0;
/// reading: epoch milliseconds are held in microseconds as a 64-bit integer; beyond that
/// (year 294247) a number is not a moment this product can hold (22007).
const MAX_UNIX_MICROS: f64 = 9_223_372_036_854_775_807.0;

impl Moment {
    /// Microseconds since 1970, or None when it is not a valid timestamp.
    pub fn micros(&self) -> Option<i64> {
        match self {
            Moment::Millis(ms) => {
                let micros = (ms * 1000.0).round();
                (PG_MIN_UNIX_MICROS..MAX_UNIX_MICROS).contains(&micros).then_some(micros as i64)
            }
            Moment::Iso(s) => iso_micros(s),
        }
    }
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// ISO-8601 as the README's examples write it. reading: the README says "ISO-8601" without a
/// profile; the classifier takes the RFC 3339 profile (`YYYY-MM-DDTHH:MM:SS[.fff…]` then `Z`
/// or `±HH:MM`; `t`/space for `T` and `z` for `Z` allowed by RFC 3339), and the same without
/// an offset (UTC). A date alone, week dates, ordinals, a comma fraction or a basic format
/// (`20261125T100000Z`) are not accepted (22007).
pub fn iso_micros(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.iter().all(|c| c.is_ascii_digit()) {
            std::str::from_utf8(part).ok()?.parse().ok()
        } else {
            None
        }
    };
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d, h, mi, sec) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    let month_days = [31, if is_leap(y) { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&mo) || d < 1 || d > month_days[(mo - 1) as usize] || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac_micros = 0i64;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        let mut j = start;
        while b.get(j).is_some_and(|c| c.is_ascii_digit()) {
            j += 1;
        }
        if j == start {
            return None;
        }
        let digits = &s[start..j];
        let six: String = digits.chars().chain(std::iter::repeat('0')).take(6).collect();
        frac_micros = six.parse().ok()?;
        i = j;
    }
    let rest = &s[i..];
    let offset_secs = match rest {
        "" => {
            // no offset: UTC, with `T` only
            if b[10] != b'T' {
                return None;
            }
            0
        }
        "Z" | "z" => 0,
        _ => {
            let r = rest.as_bytes();
            if r.len() != 6 || !matches!(r[0], b'+' | b'-') || r[3] != b':' {
                return None;
            }
            let oh: i64 = std::str::from_utf8(&r[1..3]).ok()?.parse().ok()?;
            let om: i64 = std::str::from_utf8(&r[4..6]).ok()?.parse().ok()?;
            if !r[1..3].iter().chain(&r[4..6]).all(|c| c.is_ascii_digit()) || oh > 23 || om > 59 {
                return None;
            }
            let secs = oh * 3600 + om * 60;
            if r[0] == b'-' {
                -secs
            } else {
                secs
            }
        }
    };
    if !rest.is_empty() && !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_secs;
    Some(secs * 1_000_000 + frac_micros)
}

/// What the routing rule finds (README "Routing"): the org, or the refusal that comes only when
/// the statement runs, after every check of the values (42704, or a bad tenant token).
pub enum Route {
    Org(Uuid),
    Refused(Defect),
}

/// The ids a message is routed by, in the documented order; the first registered one decides.
/// Too long ids are refused before anything runs. The fuzz registers no directory entries and
/// no tenant keys: a squad, workflow or Vapi org id finds nothing, and any token is refused.
fn route(r: &mut Reader, world: &World, call: &J, msg: &J) -> Option<Route> {
    #[derive(Clone, Copy)]
    enum By {
        Assistant,
        Directory,
        Phone,
    }
    let call_assistant = call.str("assistantId");
    // the call's own assistant is tried once
    let member = msg.str("assistantId").filter(|m| Some(*m) != call_assistant);
    let ids = [
        ("message.call.assistantId", call_assistant, By::Assistant),
        ("message.assistantId", member, By::Assistant),
        ("message.call.squadId", call.str("squadId"), By::Directory),
        ("message.call.workflowId", call.str("workflowId"), By::Directory),
        ("message.call.phoneNumberId", call.str("phoneNumberId"), By::Phone),
        ("message.call.orgId", call.str("orgId"), By::Directory),
    ];
    let mut given = Vec::new();
    let mut too_long = false;
    for (field, id, by) in ids {
        // reading: an empty id is "not given" (the README does not say)
        match id {
            None | Some("") => {}
            Some(id) if id.len() > ID_MAX => {
                r.add(Stage::Validate, field, "22001", "too long");
                too_long = true;
            }
            Some(id) => given.push((field, id, by)),
        }
    }
    if too_long {
        return None;
    }
    for (_, id, by) in &given {
        let org = match by {
            By::Assistant => world.by_assistant(id),
            By::Phone => world.by_phone(id),
            By::Directory => None,
        };
        if let Some(org) = org {
            return Some(Route::Org(org));
        }
    }
    fn token_of(o: Option<&J>) -> Option<&str> {
        o.and_then(|o| o.get("metadata")).and_then(|m| m.str("voxanne_tenant"))
    }
    let tokens = [
        ("message.call.assistant.metadata.voxanne_tenant", token_of(call.get("assistant"))),
        ("message.call.assistantOverrides.metadata.voxanne_tenant", token_of(call.get("assistantOverrides"))),
        ("message.call.squadOverrides.metadata.voxanne_tenant", token_of(call.get("squadOverrides"))),
        ("message.assistant.metadata.voxanne_tenant", token_of(msg.get("assistant"))),
        ("message.call.metadata.voxanne_tenant", token_of(Some(call))),
    ];
    if let Some((field, _)) = tokens.iter().find(|(_, t)| t.is_some_and(|t| !t.is_empty())) {
        return Some(Route::Refused(Defect {
            stage: Stage::Tenant,
            field: field.to_string(),
            sqlstate: "22023",
            kind: "bad tenant token",
        }));
    }
    Some(Route::Refused(match given.first() {
        Some((field, ..)) => {
            Defect { stage: Stage::Tenant, field: field.to_string(), sqlstate: "42704", kind: "unknown agent" }
        }
        // none at all: the assistant id is what is missing (README "message.call.assistantId")
        None => Defect {
            stage: Stage::Tenant,
            field: "message.call.assistantId".into(),
            sqlstate: "22004",
            kind: "missing",
        },
    }))
}

/// The JSON types of the `call` object every handled kind decodes (the product's `Call`).
fn call_fields(r: &mut Reader, call: Option<&J>) {
    for key in ["id", "assistantId", "squadId", "workflowId", "phoneNumberId", "orgId", "type"] {
        r.text(call, "message.call", key);
    }
    let customer = r.object(call, "message.call", "customer");
    r.text(customer, "message.call.customer", "number");
    for key in ["assistant", "assistantOverrides", "squadOverrides"] {
        let assistant = r.object(call, "message.call", key);
        assistant_fields(r, assistant, &format!("message.call.{key}"));
    }
    // not in the SDK's Call: the token's place the issue named (README "Routing")
    assistant_fields(r, call, "message.call");
}

/// An assistant's config: only its metadata's token is read.
fn assistant_fields(r: &mut Reader, assistant: Option<&J>, path: &str) {
    let metadata = r.object(assistant, path, "metadata");
    r.text(metadata, &format!("{path}.metadata"), "voxanne_tenant");
}

/// The spoken lines of a call's message list `parent.key` (README "Transcripts"): the user's
/// and the bot's entries with words and a `time` (epoch ms), each keyed by that moment, with
/// when it ended. With `validate` false, only the JSON types are checked (what decoding
/// refuses) and none is kept.
fn list_lines(
    r: &mut Reader,
    parent: Option<&J>,
    path: &str,
    key: &str,
    validate: bool,
) -> Vec<(&'static str, i64, String, i64)> {
    let mut out = Vec::new();
    let items = match parent.and_then(|p| p.get(key)) {
        None | Some(J::Null) => return out,
        Some(J::Arr(items)) => items,
        Some(_) => {
            r.wrong_type(format!("{path}.{key}"));
            return out;
        }
    };
    for (i, item) in items.iter().enumerate() {
        let at = format!("{path}.{key}[{i}]");
        if !matches!(item, J::Obj(_)) {
            r.wrong_type(at);
            continue;
        }
        let role = r.text(Some(item), &at, "role");
        let text = r.text(Some(item), &at, "message");
        let time = r.number(Some(item), &at, "time");
        let end = r.number(Some(item), &at, "endTime");
        if !validate {
            continue;
        }
        let role = match role {
            Some("user") => "user",
            Some("bot" | "assistant") => "assistant",
            _ => continue,
        };
        let (Some(text), Some(time)) = (text, time) else { continue };
        if text.is_empty() {
            continue;
        }
        if text.len() > LINE_MAX {
            r.add(Stage::Validate, format!("{at}.message"), "22001", "too long");
            continue;
        }
        if let Some((began, ended)) = span(r, &at, time, end) {
            out.push((role, began, text.to_string(), ended));
        }
    }
    out
}

/// When list entry `at` began and ended (µs): its `time`, its `endTime` or else the `time`
/// again; an end before the beginning is 22023.
fn span(r: &mut Reader, at: &str, time: f64, end: Option<f64>) -> Option<(i64, i64)> {
    let began = r.moment(&format!("{at}.time"), &Moment::Millis(time))?;
    let Some(end) = end else { return Some((began, began)) };
    let ended = r.moment(&format!("{at}.endTime"), &Moment::Millis(end))?;
    if ended < began {
        r.add(Stage::Validate, format!("{at}.endTime"), "22023", "invalid value");
        return None;
    }
    Some((began, ended))
}

/// The first source given (not null), with its path.
fn first<'a>(candidates: &[(&'static str, Option<&'a str>)]) -> Option<(&'static str, &'a str)> {
    candidates.iter().find_map(|(f, v)| v.map(|v| (*f, v)))
}

/// What `handle_vapi_message($1::text::jsonb)` must answer for `text`.
pub fn classify(world: &World, text: &str) -> Prediction {
    let body = match parse(text) {
        Ok(b) => b,
        Err(e) => {
            return Prediction::Invalid {
                defects: vec![Defect {
                    stage: Stage::Cast,
                    field: String::new(),
                    sqlstate: e.sqlstate(),
                    kind: e.kind(),
                }],
            }
        }
    };
    let mut r = Reader { defects: Vec::new() };
    let verdict = classify_body(&mut r, world, &body);
    if let Some(first) = r.defects.iter().map(|d| d.stage).min() {
        let defects: Vec<Defect> = r.defects.into_iter().filter(|d| d.stage == first).collect();
        return Prediction::Invalid { defects };
    }
    verdict.expect("a body without defects has a verdict")
}

fn classify_body(r: &mut Reader, world: &World, body: &J) -> Option<Prediction> {
    // reading: a body that is not an object is the wrong JSON type of the body itself, which
    // the product names `p_body` (the README names no path for it)
    if !matches!(body, J::Obj(_)) {
        r.add(Stage::Decode, "p_body", "22023", "wrong JSON type");
        return None;
    }
    // reading: `message` and `message.type` null are the wrong JSON type (22023), not missing;
    // the README's "must not be null" examples are about `message.call.id`
    let msg = match body.get("message") {
        None => {
            r.add(Stage::Decode, "message", "22004", "missing");
            return None;
        }
        Some(m @ J::Obj(_)) => m,
        Some(_) => {
            r.wrong_type("message");
            return None;
        }
    };
    let kind = match msg.get("type") {
        // the SDK's ServerMessageToolCalls alone has an optional `type`
        None if msg.get("toolCallList").is_some() => "tool-calls",
        None => {
            r.add(Stage::Decode, "message.type", "22004", "missing");
            return None;
        }
        Some(J::Str(k)) => k.as_str(),
        Some(_) => {
            r.wrong_type("message.type");
            return None;
        }
    };
    enum Kind {
        Status,
        Report,
        Transcript { named_final: bool },
        Conversation,
    }
    let m = Some(msg);
    let refusal = |reply: &str| Prediction::Reply {
        message_type: kind.to_string(),
        org: None,
        reply: reply.to_string(),
        upstream: true,
    };
    let no_app = |what: &str| format!(r#"{{"error":"no {what} is configured for this assistant"}}"#);
    let k = match kind {
        "status-update" => Kind::Status,
        "end-of-call-report" => Kind::Report,
        "conversation-update" => Kind::Conversation,
        "transcript" => Kind::Transcript { named_final: false },
        FINAL_TYPE_NAME => Kind::Transcript { named_final: true },
        // reading: the README lists `transcript` and `transcript[transcriptType="final"]`; other
        // `transcript[…]` spellings (Vapi's `transcript[transcriptType="partial"]`) are taken as
        // transcripts naming their type, final only when the name says final
        k if k.starts_with("transcript[") => Kind::Transcript { named_final: k.contains("final") },
        // README "Replies": the phone number's registered assistant, else the app's to answer
        "assistant-request" => {
            let call = r.object(m, "message", "call");
            call_fields(r, call);
            let phone = r.text(call, "message.call", "phoneNumberId");
            let phone = r.optional("message.call.phoneNumberId", phone, ID_MAX);
            if !r.defects.is_empty() {
                return None;
            }
            let agent = phone.and_then(|p| world.agents.iter().find(|a| a.active && a.phone.as_deref() == Some(p)));
            return Some(match agent {
                Some(a) => Prediction::Reply {
                    message_type: kind.to_string(),
                    org: Some(a.org),
                    reply: format!(r#"{{"assistantId":{}}}"#, json_string(&a.assistant)),
                    upstream: false,
                },
                None => refusal(r#"{"error":"this phone number is not registered"}"#),
            });
        }
        "tool-calls" => return Some(refusal(&no_app("tool handler"))),
        "transfer-destination-request" => return Some(refusal(&no_app("transfer destination"))),
        "handoff-destination-request" => {
            return Some(refusal(
                r#"{"destination":{},"error":"no handoff destination is configured for this assistant"}"#,
            ))
        }
        "knowledge-base-request" => return Some(refusal(r#"{"documents":[]}"#)),
        "call.endpointing.request" => return Some(refusal(&format!(r#"{{"timeoutSeconds":{ENDPOINTING_SECONDS}}}"#))),
        "campaign.predial" => return Some(refusal(r#"{"eligible":false}"#)),
        "voice-request" => return Some(refusal("null")),
        other => return Some(Prediction::Ignored { label: other.to_string() }),
    };

    // hop 6: the fields every handled kind reads, and the kind's own, by JSON type
    let call = r.object(m, "message", "call");
    call_fields(r, call);
    let assistant = r.object(m, "message", "assistant");
    assistant_fields(r, assistant, "message.assistant");
    r.text(m, "message", "assistantId");
    let ts = r.timestamp(msg);
    let call_id = call.and_then(|c| c.str("id"));
    let call_type = call.and_then(|c| c.str("type"));
    let number = call.and_then(|c| c.get("customer")).and_then(|c| c.str("number"));
    let phone = call.and_then(|c| c.str("phoneNumberId"));

    // hop 8; the tenant's refusal, if any, waits for the statement (`settle`)
    let call_and_route = |r: &mut Reader| -> Option<(String, Route)> {
        let Some(call) = call else {
            r.add(Stage::Validate, "message.call", "22004", "missing");
            return None;
        };
        let id = r.required("message.call.id", call_id, ID_MAX);
        let route = route(r, world, call, msg);
        Some((id?.to_string(), route?))
    };
    let settle = |r: &mut Reader, routed: Option<(String, Route)>| -> Option<(String, Uuid)> {
        match routed? {
            (call, Route::Org(org)) => Some((call, org)),
            (_, Route::Refused(defect)) => {
                r.defects.push(defect);
                None
            }
        }
    };
    let keyed = |call: &str, lines: Vec<(&'static str, i64, String, i64)>| -> Vec<Listed> {
        lines
            .into_iter()
            .map(|(role, micros, text, ended)| Listed {
                line: Event::Line { call: call.to_string(), role: role.to_string(), micros, text },
                ended,
            })
            .collect()
    };
    match k {
        Kind::Status => {
            let status = r.text(m, "message", "status");
            let reason = r.text(m, "message", "endedReason");
            let routed = call_and_route(r);
            if let Some(ts) = &ts {
                r.moment("message.timestamp", ts);
            }
            let status = r.required("message.status", status, SHORT_TEXT_MAX);
            if let Some(s) = status.filter(|s| !STATUSES.contains(s)) {
                // README: a status that is no step of a call's life is acknowledged
                return r.defects.is_empty().then(|| Prediction::Ignored { label: format!("status-update[{s}]") });
            }
            if status == Some("ended") {
                r.optional("message.endedReason", reason, SHORT_TEXT_MAX);
            } else {
                // README: the status row reads call.customer.number, call.phoneNumberId, call.type
                r.optional("message.call.customer.number", number, PHONE_MAX);
                r.optional("message.call.phoneNumberId", phone, ID_MAX);
                // reading: call.type may be absent (the default), but given it is a required
                // text: "" is 22023 (the README's "empty required text")
                if call_type.is_some() {
                    r.required("message.call.type", call_type, SHORT_TEXT_MAX);
                }
            }
            if !r.defects.is_empty() {
                return None;
            }
            let (call, org) = settle(r, routed)?;
            let status = status?;
            Some(Prediction::Valid {
                org,
                message_type: kind.to_string(),
                event: Event::Status(format!("status:{call}:{status}")),
                call,
                provisional: false,
                lines: Vec::new(),
            })
        }
        Kind::Report => {
            let reason = r.text(m, "message", "endedReason");
            let started = r.text(m, "message", "startedAt");
            let ended = r.text(m, "message", "endedAt");
            let cost = r.number(m, "message", "cost");
            let duration = r.number(m, "message", "durationSeconds");
            let analysis = r.object(m, "message", "analysis");
            let artifact = r.object(m, "message", "artifact");
            let legacy_transcript = r.text(m, "message", "transcript");
            let legacy_summary = r.text(m, "message", "summary");
            let legacy_url = r.text(m, "message", "recordingUrl");
            let summary = r.text(analysis, "message.analysis", "summary");
            let transcript = r.text(artifact, "message.artifact", "transcript");
            let url = r.text(artifact, "message.artifact", "recordingUrl");
            let stereo_url = r.text(artifact, "message.artifact", "stereoRecordingUrl");
            let recording = r.object(artifact, "message.artifact", "recording");
            let recording_stereo = r.text(recording, "message.artifact.recording", "stereoUrl");
            let mono = r.object(recording, "message.artifact.recording", "mono");
            let mono_url = r.text(mono, "message.artifact.recording.mono", "combinedUrl");
            // reading: the report does not use message.timestamp; its JSON type is checked
            // like every handled kind's, its value is not

            let routed = call_and_route(r);
            // startedAt / endedAt: ISO-8601 strings (reading: the README documents epoch
            // milliseconds for message.timestamp only)
            let s = started.and_then(|s| r.moment("message.startedAt", &Moment::Iso(s.to_string())));
            let e = ended.and_then(|e| r.moment("message.endedAt", &Moment::Iso(e.to_string())));
            let mut in_order = true;
            if let (Some(s), Some(e)) = (s, e) {
                if e < s {
                    in_order = false;
                    r.add(Stage::Validate, "message.endedAt", "22023", "invalid value");
                }
            }
            // README: durationSeconds, else endedAt − startedAt
            match (duration, s, e) {
                (Some(d), _, _) => r.amount("message.durationSeconds", Some(d), DURATION_MAX),
                (None, Some(s), Some(e)) if in_order => {
                    // reading: the README does not name the field of a derived duration; the
                    // product says "message.endedAt - message.startedAt"
                    r.amount("message.endedAt - message.startedAt", Some((e - s) as f64 / 1e6), DURATION_MAX)
                }
                _ => {}
            }
            r.optional("message.endedReason", reason, SHORT_TEXT_MAX);
            r.amount("message.cost", cost, COST_MAX);
            // the first of the documented sources that is given is the one used (and checked)
            if let Some((f, v)) = first(&[("message.analysis.summary", summary), ("message.summary", legacy_summary)]) {
                r.optional(f, Some(v), SUMMARY_MAX);
            }
            if let Some((f, v)) =
                first(&[("message.artifact.transcript", transcript), ("message.transcript", legacy_transcript)])
            {
                r.optional(f, Some(v), TRANSCRIPT_MAX);
            }
            if let Some((f, v)) = first(&[
                ("message.artifact.recordingUrl", url),
                ("message.artifact.recording.mono.combinedUrl", mono_url),
                ("message.artifact.stereoRecordingUrl", stereo_url),
                ("message.artifact.recording.stereoUrl", recording_stereo),
                ("message.recordingUrl", legacy_url),
            ]) {
                // reading: "http(s) only" is a `http://` or `https://` prefix, in lower case
                if let Some(v) = r.optional(f, Some(v), URL_MAX) {
                    if !(v.starts_with("https://") || v.starts_with("http://")) {
                        r.add(Stage::Validate, f, "22023", "invalid value");
                    }
                }
            }
            let lines = list_lines(r, artifact, "message.artifact", "messages", true);
            if !r.defects.is_empty() {
                return None;
            }
            let (call, org) = settle(r, routed)?;
            Some(Prediction::Valid {
                org,
                message_type: kind.to_string(),
                event: Event::Report(format!("report:{call}")),
                provisional: false,
                lines: keyed(&call, lines),
                call,
            })
        }
        Kind::Conversation => {
            let lines = list_lines(r, m, "message", "messages", true);
            if lines.is_empty() {
                return r
                    .defects
                    .is_empty()
                    .then(|| Prediction::Ignored { label: "conversation-update[no lines]".into() });
            }
            let routed = call_and_route(r);
            if !r.defects.is_empty() {
                return None;
            }
            let (call, org) = settle(r, routed)?;
            Some(Prediction::Valid {
                org,
                message_type: kind.to_string(),
                event: Event::Lines { call: call.clone() },
                provisional: false,
                lines: keyed(&call, lines),
                call,
            })
        }
        Kind::Transcript { named_final } => {
            let role = r.text(m, "message", "role");
            let ttype = r.text(m, "message", "transcriptType");
            let text = r.text(m, "message", "transcript");
            // the type: transcriptType, else the one the message type names
            let ttype = match ttype {
                Some(t) => r.required("message.transcriptType", Some(t), SHORT_TEXT_MAX),
                None => Some(if named_final { "final" } else { "partial" }),
            };
            let ttype = r.one_of("message.transcriptType", ttype, TRANSCRIPT_TYPES);
            let artifact = r.object(m, "message", "artifact");
            list_lines(r, artifact, "message.artifact", "messages", false);
            if !r.defects.is_empty() {
                return None;
            }
            if ttype == Some("partial") {
                // reading: the README says `{"ignored":"<type>"}`; for a partial transcript the
                // product's label is `transcript[partial]`
                return Some(Prediction::Ignored { label: "transcript[partial]".into() });
            }
            let routed = call_and_route(r);
            let role = r.required("message.role", role, SHORT_TEXT_MAX);
            let role = r.one_of("message.role", role, ROLES);
            // README: nothing said is acknowledged
            if text == Some("") {
                return r.defects.is_empty().then(|| Prediction::Ignored { label: "transcript[empty]".into() });
            }
            let text = r.required("message.transcript", text, LINE_MAX);
            // the moment: the utterance's `time` where the artifact lists it (the last entry of
            // the same speaker and words), else the message's timestamp, else acknowledged
            // (only the matching entry's time is read; the others were type-checked above)
            let entries = match artifact.and_then(|a| a.get("messages")) {
                Some(J::Arr(items)) => items.as_slice(),
                _ => &[],
            };
            let number = |e: &J, key: &str| match e.get(key) {
                Some(J::Num(n)) => n.parse::<f64>().ok(),
                _ => None,
            };
            let listed = entries.iter().enumerate().rev().find_map(|(i, e)| {
                let who = match e.str("role") {
                    Some("user") => Some("user"),
                    Some("bot" | "assistant") => Some("assistant"),
                    _ => None,
                };
                let time = number(e, "time");
                time.filter(|_| who.is_some() && who == role && e.str("message") == text)
                    .map(|t| (i, t, number(e, "endTime")))
            });
            // Some(span) when listed (None inside: refused), else the moment it was sent
            let listed = listed.map(|(i, t, end)| span(r, &format!("message.artifact.messages[{i}]"), t, end));
            let (micros, ended) = match (listed, &ts) {
                (Some(span), _) => (span.map(|s| s.0), span.map(|s| s.1)),
                (None, Some(ts)) => (r.moment("message.timestamp", ts), None),
                (None, None) => {
                    return r
                        .defects
                        .is_empty()
                        .then(|| Prediction::Ignored { label: "transcript[no timestamp]".into() })
                }
            };
            if !r.defects.is_empty() {
                return None;
            }
            let (call, org) = settle(r, routed)?;
            let event =
                Event::Line { call: call.clone(), role: role?.to_string(), micros: micros?, text: text?.to_string() };
            let lines: Vec<Listed> = ended.map(|ended| Listed { line: event.clone(), ended }).into_iter().collect();
            Some(Prediction::Valid {
                org,
                message_type: kind.to_string(),
                call,
                event,
                provisional: lines.is_empty(),
                lines,
            })
        }
    }
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world() -> (World, Uuid, Uuid) {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let w = World {
            agents: vec![
                Agent { org: a, assistant: "asst_a".into(), phone: Some("pn_a".into()), active: true },
                Agent { org: b, assistant: "asst_b".into(), phone: Some("pn_b".into()), active: true },
                Agent { org: b, assistant: "asst_gone".into(), phone: None, active: false },
            ],
        };
        (w, a, b)
    }

    fn codes(p: &Prediction) -> Vec<String> {
        match p {
            Prediction::Invalid { defects } => defects.iter().map(|d| format!("{} {}", d.sqlstate, d.field)).collect(),
            other => vec![other.describe()],
        }
    }

    #[test]
    fn cast_errors() {
        let (w, ..) = world();
        for (body, code) in [
            ("", "22P02"),
            ("{", "22P02"),
            (r#"{"a":"\u0000"}"#, "22P05"),
            (r#"{"a":"\ud800"}"#, "22P02"),
            (r#"{"a":"x\udc00y"}"#, "22P02"),
            (r#"{"a":1e99999999}"#, "22003"),
        ] {
            assert_eq!(codes(&classify(&w, body)), vec![format!("{code} ")], "{body}");
        }
        assert!(parse(r#"{"a":"\ud83d\ude00"}"#).is_ok());
        // the relay checks the syntax only: a syntax error after a `\u0000` is still not JSON
        assert_eq!(parse(r#"{"a":"\u0000",}"#).unwrap_err(), CastError::Nul);
        assert!(!is_json(r#"{"a":"\u0000",}"#));
        assert!(is_json(r#"{"a":"\u0000\ud800x","b":1e999999999}"#));
        let w = world().0;
        assert_eq!(classify_http(&w, r#"{"a":"\u0000",}"#.as_bytes()), HttpPrediction::NotJson);
        assert_eq!(classify_http(&w, &[b'{', 0xff, b'}']), HttpPrediction::NotJson);
        assert_eq!(classify_http(&w, "x".repeat(BODY_LIMIT + 1).as_bytes()), HttpPrediction::TooLarge);
        assert!(matches!(parse("1e400"), Ok(J::Num(_))));
        assert_eq!(parse(r#"{"a":1,"a":2}"#).unwrap().get("a"), Some(&J::Num("2".into())));
    }

    #[test]
    fn routing_and_fields() {
        let (w, a, b) = world();
        let p = classify(
            &w,
            r#"{"message":{"type":"status-update","status":"ringing","call":{"id":"c","assistantId":"asst_b","phoneNumberId":"pn_a","orgId":"x"},"org_id":"y"}}"#,
        );
        assert!(matches!(p, Prediction::Valid { org, .. } if org == b));
        let p = classify(
            &w,
            r#"{"message":{"type":"status-update","status":"ringing","call":{"id":"c","assistantId":"","phoneNumberId":"pn_a"}}}"#,
        );
        assert!(matches!(p, Prediction::Valid { org, .. } if org == a));
        let p = classify(
            &w,
            r#"{"message":{"type":"status-update","status":"ringing","call":{"id":"c","assistantId":"asst_gone","phoneNumberId":"pn_a"}}}"#,
        );
        assert!(matches!(p, Prediction::Valid { org, .. } if org == a), "an inactive assistant falls through");
        let p = classify(
            &w,
            r#"{"message":{"type":"status-update","status":"dialing","call":{"id":42,"assistantId":"asst_a"}}}"#,
        );
        assert_eq!(codes(&p), vec!["22023 message.call.id"], "decode before validation");
        let p =
            classify(&w, r#"{"message":{"type":"status-update","status":"dialing","call":{"assistantId":"asst_a"}}}"#);
        assert_eq!(codes(&p), vec!["22004 message.call.id"], "an unknown status is acknowledged, once valid");
        assert!(p.allows_error("22004", "message.call.id must not be null"));
        assert!(!p.allows_error("22004", "message.call must not be null"));
        let p = classify(&w, r#"{"message":{"type":"transcript","transcriptType":"partial","call":5}}"#);
        assert_eq!(codes(&p), vec!["22023 message.call"]);
        let p = classify(&w, r#"{"message":{"type":"transcript","transcriptType":"partial"}}"#);
        assert_eq!(p, Prediction::Ignored { label: "transcript[partial]".into() });
        let p = classify(&w, r#"{"message":{"type":"hang","call":[1]}}"#);
        assert_eq!(p, Prediction::Ignored { label: "hang".into() });
        let p = classify(&w, r#"{"message":{"type":"status-update","status":"not-found","call":{"id":"c"}}}"#);
        assert_eq!(p, Prediction::Ignored { label: "status-update[not-found]".into() });
    }

    #[test]
    fn every_route_in_its_order() {
        let (w, a, b) = world();
        let status = |call: &str| {
            format!(r#"{{"message":{{"type":"status-update","status":"queued","call":{{"id":"c"{call}}}}}}}"#)
        };
        // a squad member speaking routes when the call names no assistant
        let p = classify(
            &w,
            r#"{"message":{"type":"status-update","status":"queued","assistantId":"asst_b","call":{"id":"c","orgId":"v"}}}"#,
        );
        assert!(matches!(p, Prediction::Valid { org, .. } if org == b));
        // unregistered ids fall through to the phone number
        let p = classify(&w, &status(r#","assistantId":"asst_x","squadId":"sq","phoneNumberId":"pn_a","orgId":"v""#));
        assert!(matches!(p, Prediction::Valid { org, .. } if org == a));
        assert_eq!(codes(&classify(&w, &status(r#","orgId":"v""#))), vec!["42704 message.call.orgId"]);
        assert_eq!(codes(&classify(&w, &status(""))), vec!["22004 message.call.assistantId"]);
        let token = r#","orgId":"v","assistant":{"metadata":{"voxanne_tenant":"vxt1.x.y"}}"#;
        assert_eq!(codes(&classify(&w, &status(token))), vec!["22023 message.call.assistant.metadata.voxanne_tenant"]);
        let bad = r#","assistant":{"metadata":{"voxanne_tenant":5}}"#;
        assert_eq!(codes(&classify(&w, &status(bad))), vec!["22023 message.call.assistant.metadata.voxanne_tenant"]);
        // assistant-request: the number's agent answers
        let p = classify(&w, r#"{"message":{"type":"assistant-request","call":{"id":"c","phoneNumberId":"pn_a"}}}"#);
        assert_eq!(
            p,
            Prediction::Reply {
                message_type: "assistant-request".into(),
                org: Some(a),
                reply: r#"{"assistantId":"asst_a"}"#.into(),
                upstream: false
            }
        );
        let p = classify(&w, r#"{"message":{"toolCallList":[]}}"#);
        assert!(
            matches!(p, Prediction::Reply { ref message_type, upstream: true, .. } if message_type == "tool-calls")
        );
    }

    #[test]
    fn lists_carry_lines() {
        let (w, a, _) = world();
        let p = classify(
            &w,
            r#"{"message":{"type":"conversation-update","messages":[{"role":"system","message":"x","time":1},{"role":"bot","message":"Hi","time":1000},{"role":"user","message":"","time":2000}],"call":{"id":"c","assistantId":"asst_a"}}}"#,
        );
        let Prediction::Valid { org, lines, .. } = p else { panic!("{p:?}") };
        assert_eq!(org, a);
        let hi = Event::Line { call: "c".into(), role: "assistant".into(), micros: 1_000_000, text: "Hi".into() };
        assert_eq!(lines, vec![Listed { line: hi.clone(), ended: 1_000_000 }]);
        // with its end; an end before the beginning is refused
        let p = classify(
            &w,
            r#"{"message":{"type":"conversation-update","messages":[{"role":"bot","message":"Hi","time":1000,"endTime":1900}],"call":{"id":"c","assistantId":"asst_a"}}}"#,
        );
        let Prediction::Valid { lines, provisional: false, .. } = p else { panic!("{p:?}") };
        assert_eq!(lines, vec![Listed { line: hi.clone(), ended: 1_900_000 }]);
        let p = classify(
            &w,
            r#"{"message":{"type":"conversation-update","messages":[{"role":"bot","message":"Hi","time":1000,"endTime":900}],"call":{"id":"c","assistantId":"asst_a"}}}"#,
        );
        assert_eq!(codes(&p), vec!["22023 message.messages[0].endTime"]);
        // a transcript its artifact does not list is provisional, keyed by its timestamp
        let p = classify(
            &w,
            r#"{"message":{"type":"transcript","transcriptType":"final","role":"assistant","transcript":"Hi","timestamp":2500,"call":{"id":"c","assistantId":"asst_a"}}}"#,
        );
        let Prediction::Valid { event, provisional: true, lines, .. } = p else { panic!("{p:?}") };
        let sent = Event::Line { call: "c".into(), role: "assistant".into(), micros: 2_500_000, text: "Hi".into() };
        assert_eq!((event, lines), (sent, vec![]));
        assert!(heard_during(2_500_000, 1_000_000, 1_900_000));
        assert!(!heard_during(11_900_001, 1_000_000, 1_900_000) && !heard_during(999_999, 1_000_000, 1_900_000));
        let p =
            classify(&w, r#"{"message":{"type":"conversation-update","messages":[{"role":"user","message":"hi"}]}}"#);
        assert_eq!(p, Prediction::Ignored { label: "conversation-update[no lines]".into() });
        let p = classify(
            &w,
            r#"{"message":{"type":"conversation-update","messages":[{"role":"user","message":"hi","time":"x"}]}}"#,
        );
        assert_eq!(codes(&p), vec!["22023 message.messages[0].time"]);
    }

    #[test]
    fn timestamps() {
        assert_eq!(iso_micros("1970-01-01T00:00:01.5Z"), Some(1_500_000));
        assert_eq!(iso_micros("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(iso_micros("2026-11-25T10:00:00.000Z"), Some(1_795_600_800_000_000));
        assert_eq!(iso_micros("2026-11-25T10:00:00"), Some(1_795_600_800_000_000));
        assert_eq!(iso_micros("2026-02-29T00:00:00Z"), None);
        assert_eq!(iso_micros("2026-11-25"), None);
        assert_eq!(iso_micros("2026-11-25T10:00:00+25:00"), None);
        assert_eq!(Moment::Millis(1e300).micros(), None);
        assert_eq!(Moment::Millis(-1.0).micros(), Some(-1000));
    }
}
