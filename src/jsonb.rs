//! jsonb in and out without `serde_json::Value`: the unsafe pgrx glue, alone.
//!
//! In: [`JsonbArg`] is a `jsonb` argument, and [`Node`] is a serde `Deserializer` that walks its
//! binary form directly. Nothing is printed back to text and nothing is copied: strings are
//! borrowed from the datum, a field a struct does not name is skipped without being looked at
//! (so a number beyond f64, a string that is no UTF-8 or nesting deeper than serde allows never
//! matters where nobody reads it), and a key is found by jsonb's own lookup.
//!
//! Out: [`JsonbOut`] is a `jsonb` return value made from any `Serialize`.

use std::ffi::{c_char, c_int, CStr};
use std::fmt;
use std::marker::PhantomData;

use pgrx::callconv::{Arg, ArgAbi, BoxRet, FcInfo};
use pgrx::datum::{Datum, FromDatum, IntoDatum};
use pgrx::pg_sys::{self, JsonbContainer, JsonbIteratorToken as Token, JsonbValue};
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin,
};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Unexpected, Visitor};
use serde::Serialize;

/// A detoasted `jsonb` argument, valid for the function call that received it.
pub struct JsonbArg(*mut pg_sys::Jsonb);

impl JsonbArg {
    pub fn root(&self) -> Node<'_> {
        // SAFETY: the pointer is a detoasted jsonb that outlives the borrow of self.
        unsafe { Node::of_container(&raw mut (*self.0).root) }
    }

    /// The argument as a bind of a statement, as it is: no copy, no printing.
    pub fn bind(&self) -> JsonbBind<'_> {
        JsonbBind(self.0, PhantomData)
    }
}

/// A `jsonb` argument passed on to a statement; valid while the argument is.
#[derive(Clone, Copy)]
pub struct JsonbBind<'a>(*mut pg_sys::Jsonb, PhantomData<&'a JsonbArg>);

impl IntoDatum for JsonbBind<'_> {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(pg_sys::Datum::from(self.0))
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}

impl FromDatum for JsonbArg {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _: pg_sys::Oid) -> Option<Self> {
        if is_null {
            return None;
        }
        // SAFETY: the datum is a jsonb (the declared argument type); a detoasted copy, if one is
        // made, lives in the call's memory context.
        Some(Self(unsafe { pg_sys::pg_detoast_datum(datum.cast_mut_ptr()) }.cast()))
    }
}

// SAFETY: unboxed through FromDatum, like pgrx's own JsonB.
unsafe impl<'fcx> ArgAbi<'fcx> for JsonbArg {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or_else(|| panic!("argument {index} must not be null"))
    }
}

// SAFETY: the SQL type is jsonb, which is what FromDatum above reads.
unsafe impl SqlTranslatable for JsonbArg {
    const TYPE_IDENT: &'static str = concat!(module_path!(), "::JsonbArg");
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::literal("jsonb"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> = Err(ReturnsError::Datum);
}

/// One jsonb value, borrowed from its datum.
#[derive(Clone, Copy)]
pub enum Node<'a> {
    Null,
    Bool(bool),
    Str(&'a [u8]),
    Number(pg_sys::Numeric),
    Object(*mut JsonbContainer, PhantomData<&'a ()>),
    Array(*mut JsonbContainer, PhantomData<&'a ()>),
}

impl<'a> Node<'a> {
    /// SAFETY: `container` must stay valid for 'a.
    unsafe fn of_container(container: *mut JsonbContainer) -> Self {
        let header = unsafe { (*container).header };
        if header & pg_sys::JB_FSCALAR != 0 {
            // a scalar document is stored as a one-element array marked scalar
            let value = unsafe { pg_sys::getIthJsonbValueFromContainer(container, 0) };
            return unsafe { Self::of_value(&*value) };
        }
        if header & pg_sys::JB_FOBJECT != 0 {
            Self::Object(container, PhantomData)
        } else {
            Self::Array(container, PhantomData)
        }
    }

    /// SAFETY: `v` must come from a container that stays valid for 'a.
    unsafe fn of_value(v: &JsonbValue) -> Self {
        use pg_sys::jbvType;
        unsafe {
            match v.type_ {
                jbvType::jbvBool => Self::Bool(v.val.boolean),
                jbvType::jbvString => {
                    Self::Str(std::slice::from_raw_parts(v.val.string.val.cast(), v.val.string.len as usize))
                }
                jbvType::jbvNumeric => Self::Number(v.val.numeric),
                jbvType::jbvBinary => Self::of_container(v.val.binary.data),
                _ => Self::Null,
            }
        }
    }

    /// The value of `key` when this is an object that has it.
    pub fn get(self, key: &str) -> Option<Node<'a>> {
        let Self::Object(container, _) = self else { return None };
        let mut found = JsonbValue::default();
        // SAFETY: container is a valid object container; the key is passed with its length.
        let hit = unsafe {
            pg_sys::getKeyJsonValueFromContainer(
                container,
                key.as_ptr() as *const c_char,
                key.len() as c_int,
                &mut found,
            )
        };
        (!hit.is_null()).then(|| unsafe { Self::of_value(&found) })
    }

    /// The type error in JSON's words (serde's would name Rust's: "a borrowed string").
    fn not_a(&self, expected: &str) -> Error {
        de::Error::invalid_type(self.unexpected(), &expected)
    }

    fn unexpected(&self) -> Unexpected<'a> {
        match *self {
            Self::Null => Unexpected::Other("null"),
            Self::Bool(b) => Unexpected::Bool(b),
            Self::Str(s) => std::str::from_utf8(s).map_or(Unexpected::Other("string"), Unexpected::Str),
            Self::Number(_) => Unexpected::Other("number"),
            Self::Object(..) => Unexpected::Other("object"),
            Self::Array(..) => Unexpected::Other("array"),
        }
    }

    fn str(s: &'a [u8]) -> Result<&'a str, Error> {
        std::str::from_utf8(s).map_err(|_| de::Error::custom("string is not valid UTF-8"))
    }
}

/// A numeric as jsonb keeps it, printed; only for values a struct reads.
fn numeric_text(n: pg_sys::Numeric) -> String {
    // SAFETY: n is a valid numeric; numeric_out returns a palloc'd C string.
    let text =
        unsafe { pgrx::fcinfo::direct_function_call::<&CStr>(pg_sys::numeric_out, &[Some(pg_sys::Datum::from(n))]) };
    text.map(|t| t.to_string_lossy().into_owned()).unwrap_or_default()
}

fn visit_number<'de, V: Visitor<'de>>(n: pg_sys::Numeric, visitor: V) -> Result<V::Value, Error> {
    let text = numeric_text(n);
    if let Ok(i) = text.parse::<i64>() {
        return visitor.visit_i64(i);
    }
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() => visitor.visit_f64(f),
        _ => Err(de::Error::custom("number out of range")),
    }
}

impl<'de> Deserializer<'de> for Node<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Self::Null => visitor.visit_unit(),
            Self::Bool(b) => visitor.visit_bool(b),
            Self::Str(s) => visitor.visit_borrowed_str(Self::str(s)?),
            Self::Number(n) => visit_number(n, visitor),
            Self::Object(c, _) => visitor.visit_map(Entries::new(c)),
            Self::Array(c, _) => visitor.visit_seq(Elements::new(c)),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Self::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Self::Str(s) => visitor.visit_borrowed_str(Self::str(s)?),
            _ => Err(self.not_a("a string")),
        }
    }

    // Only an object: serde's derived visitors would also read an array by position, and
    // `"call": ["id", "asst_…"]` would route like `{"id": …, "assistantId": …}`.
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Self::Object(c, _) => visitor.visit_map(Entries::new(c)),
            _ => Err(self.not_a("an object")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Self::Number(n) => visit_number(n, visitor),
            _ => Err(self.not_a("a number")),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 char bytes byte_buf unit unit_struct
        newtype_struct seq tuple tuple_struct enum identifier
    }
}

/// Iterates a container one level deep: nested containers come back as values, unvisited.
struct Level<'a> {
    it: *mut pg_sys::JsonbIterator,
    _data: PhantomData<&'a ()>,
}

impl<'a> Level<'a> {
    fn new(container: *mut JsonbContainer) -> Self {
        // SAFETY: container is valid for 'a; the first token opens the container.
        let mut level = Self { it: unsafe { pg_sys::JsonbIteratorInit(container) }, _data: PhantomData };
        level.next();
        level
    }

    fn next(&mut self) -> (Token::Type, Node<'a>) {
        let mut v = JsonbValue::default();
        // SAFETY: the iterator is live until it returns WJB_DONE, which the callers never pass.
        let token = unsafe { pg_sys::JsonbIteratorNext(&mut self.it, &mut v, true) };
        let node = match token {
            Token::WJB_KEY | Token::WJB_VALUE | Token::WJB_ELEM => unsafe { Node::of_value(&v) },
            _ => Node::Null,
        };
        (token, node)
    }
}

struct Entries<'a> {
    level: Level<'a>,
    value: Node<'a>,
}

impl<'a> Entries<'a> {
    fn new(container: *mut JsonbContainer) -> Self {
        Self { level: Level::new(container), value: Node::Null }
    }
}

impl<'de> MapAccess<'de> for Entries<'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        match self.level.next() {
            (Token::WJB_KEY, key) => {
                self.value = self.level.next().1;
                seed.deserialize(key).map(Some)
            }
            _ => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        seed.deserialize(self.value)
    }
}

struct Elements<'a>(Level<'a>);

impl<'a> Elements<'a> {
    fn new(container: *mut JsonbContainer) -> Self {
        Self(Level::new(container))
    }
}

impl<'de> SeqAccess<'de> for Elements<'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Error> {
        match self.0.next() {
            (Token::WJB_ELEM, element) => seed.deserialize(element).map(Some),
            _ => Ok(None),
        }
    }
}

/// A decoding error: serde's message; the path is added by serde_path_to_error.
#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

/// A `jsonb` return value.
pub struct JsonbOut(String);

impl JsonbOut {
    pub fn of(value: &impl Serialize) -> Self {
        // our answers are plain structs of strings and numbers: serializing cannot fail
        Self(serde_json::to_string(value).unwrap_or_else(|_| "null".into()))
    }

    /// The answer's JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl IntoDatum for JsonbOut {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        let text = std::ffi::CString::new(self.0).ok()?;
        // SAFETY: jsonb_in parses a C string into a palloc'd jsonb.
        unsafe { pgrx::fcinfo::direct_function_call_as_datum(pg_sys::jsonb_in, &[Some(text.as_ptr().into())]) }
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}

// SAFETY: returns the datum IntoDatum built, or NULL.
unsafe impl BoxRet for JsonbOut {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut FcInfo<'fcx>) -> Datum<'fcx> {
        match self.into_datum() {
            Some(datum) => unsafe { fcinfo.return_raw_datum(datum) },
            None => fcinfo.return_null(),
        }
    }
}

// SAFETY: the SQL type is jsonb, which is what IntoDatum above builds.
unsafe impl SqlTranslatable for JsonbOut {
    const TYPE_IDENT: &'static str = concat!(module_path!(), "::JsonbOut");
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::literal("jsonb"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> = Ok(ReturnsRef::One(SqlMappingRef::literal("jsonb")));
}
