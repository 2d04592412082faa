//! The subset of MessagePack that records use (SPEC §2, F-CONV-4): a writer that always picks the
//! smallest encoding, and a bounds-checked cursor that never panics and never allocates on the
//! strength of a length it has not checked against the bytes that remain.

use super::consts::MAX_NESTING;

/// Appends MessagePack values to a buffer. Writing to a `Vec` cannot fail.
pub(crate) struct Enc<'a>(pub &'a mut Vec<u8>);

impl Enc<'_> {
    pub fn nil(&mut self) {
        self.0.push(0xc0);
    }
    pub fn uint(&mut self, v: u64) {
        let b = &mut *self.0;
        if v < 0x80 {
            b.push(v as u8);
        } else if v <= u8::MAX as u64 {
            b.extend_from_slice(&[0xcc, v as u8]);
        } else if v <= u16::MAX as u64 {
            b.push(0xcd);
            b.extend_from_slice(&(v as u16).to_be_bytes());
        } else if v <= u32::MAX as u64 {
            b.push(0xce);
            b.extend_from_slice(&(v as u32).to_be_bytes());
        } else {
            b.push(0xcf);
            b.extend_from_slice(&v.to_be_bytes());
        }
    }
    pub fn opt_uint(&mut self, v: Option<u64>) {
        match v {
            Some(v) => self.uint(v),
            None => self.nil(),
        }
    }
    pub fn f64(&mut self, v: f64) {
        self.0.push(0xcb);
        self.0.extend_from_slice(&v.to_bits().to_be_bytes());
    }
    pub fn bin(&mut self, v: &[u8]) {
        let n = v.len();
        if n <= u8::MAX as usize {
            self.0.extend_from_slice(&[0xc4, n as u8]);
        } else if n <= u16::MAX as usize {
            self.0.push(0xc5);
            self.0.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            // Lengths beyond u32 cannot occur: a record is limited to MAX_BLOCK_RAW (SPEC §7),
            // and the writer checks that limit after encoding.
            self.0.push(0xc6);
            self.0.extend_from_slice(&(n as u32).to_be_bytes());
        }
        self.0.extend_from_slice(v);
    }
    pub fn array(&mut self, n: usize) {
        if n < 16 {
            self.0.push(0x90 | n as u8);
        } else if n <= u16::MAX as usize {
            self.0.push(0xdc);
            self.0.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            self.0.push(0xdd);
            self.0.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
}

/// What went wrong decoding, and where (offset in the decoded buffer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodeError {
    pub offset: usize,
    pub detail: String,
}

pub(crate) type DResult<T> = Result<T, DecodeError>;

/// A read position in a buffer of MessagePack values.
pub(crate) struct Cur<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Cur<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Cur { buf, pos: 0 }
    }

    pub fn err<T>(&self, at: usize, detail: impl Into<String>) -> DResult<T> {
        Err(DecodeError {
            offset: at,
            detail: detail.into(),
        })
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> DResult<&'a [u8]> {
        if n > self.remaining() {
            return self.err(
                self.pos,
                format!("{what} needs {n} bytes but only {} remain", self.remaining()),
            );
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn be(&mut self, n: usize, what: &str) -> DResult<u64> {
        Ok(self.take(n, what)?.iter().fold(0u64, |acc, &b| (acc << 8) | b as u64))
    }

    pub fn peek(&self) -> DResult<u8> {
        match self.buf.get(self.pos) {
            Some(&m) => Ok(m),
            None => self.err(self.pos, "value expected, found end of data"),
        }
    }

    fn marker(&mut self) -> DResult<u8> {
        let m = self.peek()?;
        self.pos += 1;
        Ok(m)
    }

    /// An unsigned integer in any encoding, or a signed one holding a non-negative value.
    pub fn uint(&mut self, what: &str) -> DResult<u64> {
        let at = self.pos;
        let m = self.marker()?;
        let v: i128 = match m {
            0x00..=0x7f => m as i128,
            0xe0..=0xff => (m as i8) as i128,
            0xcc => self.be(1, what)? as i128,
            0xcd => self.be(2, what)? as i128,
            0xce => self.be(4, what)? as i128,
            0xcf => self.be(8, what)? as i128,
            0xd0 => self.be(1, what)? as u8 as i8 as i128,
            0xd1 => self.be(2, what)? as u16 as i16 as i128,
            0xd2 => self.be(4, what)? as u32 as i32 as i128,
            0xd3 => self.be(8, what)? as i64 as i128,
            _ => {
                return self.err(
                    at,
                    format!("{what}: expected an unsigned integer, found {}", describe(m)),
                )
            }
        };
        if v < 0 {
            return self.err(at, format!("{what}: expected an unsigned integer, found {v}"));
        }
        Ok(v as u64)
    }

    /// `nil`, or an unsigned integer.
    pub fn opt_uint(&mut self, what: &str) -> DResult<Option<u64>> {
        if self.peek()? == 0xc0 {
            self.pos += 1;
            return Ok(None);
        }
        self.uint(what).map(Some)
    }

    /// True (and consumed) when the next value is `nil`.
    pub fn nil(&mut self) -> DResult<bool> {
        let is_nil = self.peek()? == 0xc0;
        if is_nil {
            self.pos += 1;
        }
        Ok(is_nil)
    }

    /// A `float 64`; no other encoding is accepted for scores (F-REC-4).
    pub fn f64(&mut self, what: &str) -> DResult<f64> {
        let at = self.pos;
        let m = self.marker()?;
        if m != 0xcb {
            return self.err(at, format!("{what}: expected float 64, found {}", describe(m)));
        }
        Ok(f64::from_bits(self.be(8, what)?))
    }

    /// A `bin 8/16/32`; `str` is rejected (F-CONV-4).
    pub fn bin(&mut self, what: &str) -> DResult<&'a [u8]> {
        let at = self.pos;
        let m = self.marker()?;
        let n = match m {
            0xc4 => self.be(1, what)?,
            0xc5 => self.be(2, what)?,
            0xc6 => self.be(4, what)?,
            _ => return self.err(at, format!("{what}: expected bin, found {}", describe(m))),
        };
        self.take(n as usize, what)
    }

    /// An array header; the length is checked against the remaining bytes (each element takes at
    /// least one byte), so a caller may reserve that many slots.
    pub fn array(&mut self, what: &str) -> DResult<usize> {
        let at = self.pos;
        let m = self.marker()?;
        let n = match m {
            0x90..=0x9f => (m & 0x0f) as u64,
            0xdc => self.be(2, what)?,
            0xdd => self.be(4, what)?,
            _ => return self.err(at, format!("{what}: expected an array, found {}", describe(m))),
        } as usize;
        if n > self.remaining() {
            return self.err(
                at,
                format!(
                    "{what}: array of {n} elements cannot fit in the {} bytes that remain",
                    self.remaining()
                ),
            );
        }
        Ok(n)
    }

    /// An array header whose length must be exactly `n`.
    pub fn array_of(&mut self, n: usize, what: &str) -> DResult<()> {
        let at = self.pos;
        let got = self.array(what)?;
        if got != n {
            return self.err(at, format!("{what}: expected an array of {n} elements, found {got}"));
        }
        Ok(())
    }

    /// Skips one value of any type. `depth` is the number of arrays and maps around it (a record's
    /// own array is the first); an array or map at depth MAX_NESTING or deeper is rejected, and
    /// a `str` must be UTF-8 (SPEC §7, F-CONV-4).
    pub fn skip(&mut self, depth: usize) -> DResult<()> {
        let at = self.pos;
        let m = self.marker()?;
        let (len, children) = match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * (m & 0x0f) as u64),
            0x90..=0x9f => (0, (m & 0x0f) as u64),
            0xa0..=0xbf => ((m & 0x1f) as u64, 0),
            0xc4 | 0xd9 => (self.be(1, "length")?, 0),
            0xc5 | 0xda => (self.be(2, "length")?, 0),
            0xc6 | 0xdb => (self.be(4, "length")?, 0),
            0xc7 => (self.be(1, "length")? + 1, 0),
            0xc8 => (self.be(2, "length")? + 1, 0),
            0xc9 => (self.be(4, "length")? + 1, 0),
            0xca => (4, 0),
            0xcb => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xce | 0xd2 => (4, 0),
            0xcf | 0xd3 => (8, 0),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xdc => (0, self.be(2, "length")?),
            0xdd => (0, self.be(4, "length")?),
            0xde => (0, 2 * self.be(2, "length")?),
            0xdf => (0, 2 * self.be(4, "length")?),
            0xc1 => return self.err(at, "invalid MessagePack marker 0xc1"),
        };
        let container = matches!(m, 0x80..=0x9f | 0xdc..=0xdf);
        if container && depth >= MAX_NESTING {
            return self.err(at, format!("arrays or maps nested deeper than {MAX_NESTING} levels"));
        }
        let bytes = self.take(len as usize, "value")?;
        if matches!(m, 0xa0..=0xbf | 0xd9..=0xdb) && std::str::from_utf8(bytes).is_err() {
            return self.err(at, "a str that is not valid UTF-8");
        }
        if children > self.remaining() as u64 {
            return self.err(
                at,
                format!(
                    "{children} nested values cannot fit in the {} bytes that remain",
                    self.remaining()
                ),
            );
        }
        for _ in 0..children {
            self.skip(depth + 1)?;
        }
        Ok(())
    }
}

/// A short human description of a MessagePack marker, for error messages.
fn describe(m: u8) -> String {
    let name = match m {
        0x00..=0x7f | 0xcc..=0xcf => "an unsigned integer",
        0xe0..=0xff | 0xd0..=0xd3 => "a signed integer",
        0x80..=0x8f | 0xde | 0xdf => "a map",
        0x90..=0x9f | 0xdc | 0xdd => "an array",
        0xa0..=0xbf | 0xd9..=0xdb => "a str",
        0xc0 => "nil",
        0xc2 | 0xc3 => "a boolean",
        0xc4..=0xc6 => "a bin",
        0xca => "a float 32",
        0xcb => "a float 64",
        0xc7..=0xc9 | 0xd4..=0xd8 => "an ext",
        0xc1 => "the invalid marker",
    };
    format!("{name} (marker 0x{m:02x})")
}
