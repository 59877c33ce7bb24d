//! The body encoding: fixed-width little-endian integers, length-prefixed strings and lists,
//! JSON values as text. One trait, [`Wire`], implemented for each type that crosses the wire
//! (byte layouts: `docs/protocol.md`).
//!
//! Decoding never trusts a length: a list's count is checked against the bytes that remain
//! before anything is allocated, so a hostile frame cannot make the reader allocate more than
//! the frame's own size.

use serde_json::Value;

/// Why a frame body could not be decoded. Names the field that was being read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("frame ends inside `{0}`")]
    Truncated(&'static str),
    #[error("`{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("{0} unexpected byte(s) after the end of the message")]
    Trailing(usize),
}

impl DecodeError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// Reads a body front to back.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated(field));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, field)?);
        Ok(a)
    }

    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }
    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }
    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }
    pub fn f32(&mut self, field: &'static str) -> Result<f32, DecodeError> {
        Ok(f32::from_le_bytes(self.array(field)?))
    }

    pub fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(DecodeError::invalid(
                field,
                format!("{b} is not a bool (0 or 1)"),
            )),
        }
    }

    /// A `u32` count of items of at least `min_size` bytes each, checked against what remains.
    pub fn count(&mut self, min_size: usize, field: &'static str) -> Result<usize, DecodeError> {
        let n = self.u32(field)? as usize;
        if n.saturating_mul(min_size.max(1)) > self.buf.len() {
            return Err(DecodeError::Truncated(field));
        }
        Ok(n)
    }

    pub fn str(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let n = self.count(1, field)?;
        std::str::from_utf8(self.take(n, field)?)
            .map_err(|e| DecodeError::invalid(field, format!("not UTF-8: {e}")))
    }

    /// Fails unless every byte was read.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.buf.len() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

/// A type with a wire form.
pub trait Wire: Sized {
    /// Smallest encoded size in bytes, used to bound list counts before allocating.
    const MIN_SIZE: usize;
    fn put(&self, out: &mut Vec<u8>);
    fn get(r: &mut Reader<'_>, field: &'static str) -> Result<Self, DecodeError>;
}

macro_rules! wire_int {
    ($($t:ty => $get:ident),*) => {$(
        impl Wire for $t {
            const MIN_SIZE: usize = std::mem::size_of::<$t>();
            fn put(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(r: &mut Reader<'_>, field: &'static str) -> Result<Self, DecodeError> {
                r.$get(field)
            }
        }
    )*};
}
wire_int!(u8 => u8, u32 => u32, u64 => u64, f32 => f32);

impl Wire for bool {
    const MIN_SIZE: usize = 1;
    fn put(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn get(r: &mut Reader<'_>, field: &'static str) -> Result<Self, DecodeError> {
        r.bool(field)
    }
}

impl Wire for String {
    const MIN_SIZE: usize = 4;
    fn put(&self, out: &mut Vec<u8>) {
        put_str(out, self);
    }
    fn get(r: &mut Reader<'_>, field: &'static str) -> Result<Self, DecodeError> {
        Ok(r.str(field)?.to_owned())
    }
}

pub fn put_str(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// Writes a length as `u32`. Frames are capped far below 4 GiB, so a longer value is a bug
/// of the sender, caught by the frame size check before it is sent.
fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

/// JSON values (properties, filters) travel as UTF-8 JSON text.
impl Wire for Value {
    const MIN_SIZE: usize = 4;
    fn put(&self, out: &mut Vec<u8>) {
        put_str(out, &self.to_string());
    }
    fn get(r: &mut Reader<'_>, field: &'static str) -> Result<Self, DecodeError> {
        serde_json::from_str(r.str(field)?)
            .map_err(|e| DecodeError::invalid(field, format!("not valid JSON: {e}")))
    }
}

impl<T: Wire> Wire for Vec<T> {
    const MIN_SIZE: usize = 4;
    fn put(&self, out: &mut Vec<u8>) {
        put_len(out, self.len());
        for x in self {
            x.put(out);
        }
    }
    fn get(r: &mut Reader<'_>, field: &'static str) -> Result<Self, DecodeError> {
        let n = r.count(T::MIN_SIZE, field)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(T::get(r, field)?);
        }
        Ok(v)
    }
}

impl<T: Wire> Wire for Option<T> {
    const MIN_SIZE: usize = 1;
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(x) => {
                out.push(1);
                x.put(out);
            }
        }
    }
    fn get(r: &mut Reader<'_>, field: &'static str) -> Result<Self, DecodeError> {
        match r.u8(field)? {
            0 => Ok(None),
            1 => Ok(Some(T::get(r, field)?)),
            b => Err(DecodeError::invalid(
                field,
                format!("option tag {b} is neither 0 (none) nor 1 (some)"),
            )),
        }
    }
}

impl<A: Wire, B: Wire> Wire for (A, B) {
    const MIN_SIZE: usize = A::MIN_SIZE + B::MIN_SIZE;
    fn put(&self, out: &mut Vec<u8>) {
        self.0.put(out);
        self.1.put(out);
    }
    fn get(r: &mut Reader<'_>, field: &'static str) -> Result<Self, DecodeError> {
        Ok((A::get(r, field)?, B::get(r, field)?))
    }
}

/// Implements [`Wire`] for a struct as its fields in order.
#[macro_export]
macro_rules! wire_struct {
    ($t:ident { $($f:ident : $ft:ty),* $(,)? }) => {
        impl $crate::codec::Wire for $t {
            const MIN_SIZE: usize = 0 $(+ <$ft as $crate::codec::Wire>::MIN_SIZE)*;
            fn put(&self, out: &mut Vec<u8>) {
                $( $crate::codec::Wire::put(&self.$f, out); )*
            }
            fn get(
                r: &mut $crate::codec::Reader<'_>,
                _field: &'static str,
            ) -> Result<Self, $crate::codec::DecodeError> {
                Ok(Self { $( $f: <$ft as $crate::codec::Wire>::get(r, stringify!($f))?, )* })
            }
        }
    };
}

/// Implements [`Wire`] for a field-less enum as one byte per variant.
#[macro_export]
macro_rules! wire_tag {
    ($t:ty, $($v:path = $n:literal),* $(,)?) => {
        impl $crate::codec::Wire for $t {
            const MIN_SIZE: usize = 1;
            fn put(&self, out: &mut Vec<u8>) {
                out.push(match self { $($v => $n,)* });
            }
            fn get(
                r: &mut $crate::codec::Reader<'_>,
                field: &'static str,
            ) -> Result<Self, $crate::codec::DecodeError> {
                match r.u8(field)? {
                    $($n => Ok($v),)*
                    b => Err($crate::codec::DecodeError::invalid(
                        field,
                        format!("unknown {} tag {b}", stringify!($t)),
                    )),
                }
            }
        }
    };
}

/// Encodes one value (a convenience for tests and for building frames).
pub fn to_bytes<T: Wire>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    v.put(&mut out);
    out
}

/// Decodes one value that must use every byte.
pub fn from_bytes<T: Wire>(bytes: &[u8], field: &'static str) -> Result<T, DecodeError> {
    let mut r = Reader::new(bytes);
    let v = T::get(&mut r, field)?;
    r.finish()?;
    Ok(v)
}

/// Declares an enum of struct variants whose wire form is a tag byte and then the fields in
/// order; also gives each variant a name (for metrics and logs) through `name()`.
#[macro_export]
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $t:ident {
            $( $(#[$vmeta:meta])* $tag:literal $name:literal => $v:ident { $($f:ident : $ft:ty),* $(,)? } ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        pub enum $t {
            $( $(#[$vmeta])* $v { $($f: $ft),* } ),*
        }

        impl $t {
            /// The tag byte of this variant on the wire.
            pub fn tag(&self) -> u8 {
                match self { $( $t::$v { .. } => $tag ),* }
            }
            /// A stable lower-case name (metrics labels, logs).
            pub fn name(&self) -> &'static str {
                match self { $( $t::$v { .. } => $name ),* }
            }
        }

        impl $crate::codec::Wire for $t {
            const MIN_SIZE: usize = 1;
            #[allow(unused_variables)]
            fn put(&self, out: &mut Vec<u8>) {
                out.push(self.tag());
                match self {
                    $( $t::$v { $($f),* } => { $( $crate::codec::Wire::put($f, out); )* } ),*
                }
            }
            fn get(
                r: &mut $crate::codec::Reader<'_>,
                field: &'static str,
            ) -> Result<Self, $crate::codec::DecodeError> {
                match r.u8(field)? {
                    $( $tag => Ok($t::$v { $( $f: <$ft as $crate::codec::Wire>::get(r, stringify!($f))? ),* }), )*
                    b => Err($crate::codec::DecodeError::invalid(
                        field,
                        format!("unknown {} tag {b}", stringify!($t)),
                    )),
                }
            }
        }
    };
}
