//! NumPy `.npy` files (format versions 1.0, 2.0 and 3.0).
//!
//! Layout: the magic `\x93NUMPY`, a major and a minor version byte, the header length
//! (little-endian `u16` for version 1, `u32` for versions 2 and 3), then the header: a Python
//! dict literal such as `{'descr': '<f4', 'fortran_order': False, 'shape': (10, 28, 28), }`,
//! padded with spaces and a newline. The elements follow, row-major when `fortran_order` is
//! false. The header is read by a small tolerant parser of Python literals (strings, booleans,
//! `None`, integers, tuples, lists and dicts); unknown keys are ignored.

use std::path::Path;

use super::{Array, Dtype};
use crate::error::Error;

/// The first six bytes of every .npy file.
pub const MAGIC: &[u8] = b"\x93NUMPY";

/// Headers longer than this are refused (NumPy itself writes a few hundred bytes).
pub const MAX_HEADER: usize = 1 << 20;

/// Nesting depth the header parser accepts.
const MAX_DEPTH: usize = 32;

/// Parses the (decompressed) bytes of a .npy file, checking that the payload holds exactly the
/// elements the header declares.
pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<Array, Error> {
    let npy_err = |reason: String| Error::Npy { path: path.to_path_buf(), reason };
    if !bytes.starts_with(MAGIC) {
        return Err(npy_err("it does not start with the magic bytes \\x93NUMPY".into()));
    }
    let (Some(&major), Some(&minor)) = (bytes.get(6), bytes.get(7)) else {
        return Err(npy_err("the file ends inside the version number".into()));
    };
    let (len, start) = match major {
        1 => (bytes.get(8..10).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize), 10),
        2 | 3 => (bytes.get(8..12).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize), 12),
        _ => {
            return Err(npy_err(format!(
                "format version {major}.{minor} is not supported (1.0, 2.0 and 3.0 are); re-save it with np.save"
            )))
        }
    };
    let Some(len) = len else {
        return Err(npy_err("the file ends inside the header length".into()));
    };
    if len > MAX_HEADER {
        return Err(npy_err(format!("the header claims {len} bytes, more than the {MAX_HEADER} accepted")));
    }
    let Some(header) = bytes.get(start..start + len) else {
        return Err(npy_err(format!(
            "the header claims {len} bytes but the file ends after {} bytes",
            bytes.len().saturating_sub(start)
        )));
    };
    let text = std::str::from_utf8(header).map_err(|_| npy_err("the header is not text".into()))?;
    let header = Header::parse(text).map_err(|r| npy_err(format!("header {}: {r}", quote(text))))?;
    let (dtype, big_endian) = parse_descr(&header.descr)
        .ok_or_else(|| Error::UnsupportedDtype { path: path.to_path_buf(), dtype: header.descr.clone() })?;
    // Fortran order only matters when more than one axis is longer than 1.
    if header.fortran_order && header.shape.iter().filter(|&&d| d > 1).count() > 1 {
        return Err(Error::FortranOrder { path: path.to_path_buf() });
    }
    Array::new(path, dtype, big_endian, header.shape, bytes, start + len)
}

/// The header text, shortened for messages.
fn quote(text: &str) -> String {
    let t = text.trim_end();
    if t.chars().count() > 120 {
        format!("`{}…`", t.chars().take(120).collect::<String>())
    } else {
        format!("`{t}`")
    }
}

/// Element type and byte order of a descr such as `<f4`, `|u1` or `>i8`.
pub fn parse_descr(descr: &str) -> Option<(Dtype, bool)> {
    let (big, code) = match descr.as_bytes().first()? {
        b'<' | b'|' => (false, &descr[1..]),
        b'>' => (true, &descr[1..]),
        b'=' => (cfg!(target_endian = "big"), &descr[1..]),
        _ => (cfg!(target_endian = "big"), descr),
    };
    let dtype = match code {
        "u1" => Dtype::U8,
        "i1" => Dtype::I8,
        "i2" => Dtype::I16,
        "u2" => Dtype::U16,
        "i4" => Dtype::I32,
        "u4" => Dtype::U32,
        "i8" => Dtype::I64,
        "u8" => Dtype::U64,
        "f4" => Dtype::F32,
        "f8" => Dtype::F64,
        _ => return None,
    };
    Some((dtype, big))
}

/// The descr NumPy writes for an element type (little-endian).
pub fn descr(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::U8 => "|u1",
        Dtype::I8 => "|i1",
        Dtype::I16 => "<i2",
        Dtype::U16 => "<u2",
        Dtype::I32 => "<i4",
        Dtype::U32 => "<u4",
        Dtype::I64 => "<i8",
        Dtype::U64 => "<u8",
        Dtype::F32 => "<f4",
        Dtype::F64 => "<f8",
    }
}

/// Encodes a .npy file (version 1.0 when the header fits, else 2.0) from little-endian element
/// bytes, as `np.save` would; for tests and tools.
pub fn encode(dtype: Dtype, shape: &[usize], data_le: &[u8]) -> Vec<u8> {
    encode_version(dtype, shape, data_le, 1)
}

/// Like [`encode`] with a chosen major version (1, 2 or 3).
pub fn encode_version(dtype: Dtype, shape: &[usize], data_le: &[u8], major: u8) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {shape_text}, }}", descr(dtype));
    let prefix = if major == 1 { 10 } else { 12 };
    while (prefix + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = MAGIC.to_vec();
    out.extend([major, 0]);
    if major == 1 {
        out.extend((header.len() as u16).to_le_bytes());
    } else {
        out.extend((header.len() as u32).to_le_bytes());
    }
    out.extend(header.as_bytes());
    out.extend(data_le);
    out
}

/// The three keys of a .npy header.
#[derive(Debug, PartialEq)]
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<u64>,
}

/// A Python literal as found in .npy headers.
#[derive(Debug, PartialEq)]
enum Py {
    Str(String),
    Bool(bool),
    None,
    Int(u64),
    Seq(Vec<Py>),
    Dict(Vec<(Py, Py)>),
}

impl Py {
    fn describe(&self) -> &'static str {
        match self {
            Py::Str(_) => "a string",
            Py::Bool(_) => "a boolean",
            Py::None => "None",
            Py::Int(_) => "an integer",
            Py::Seq(_) => "a tuple",
            Py::Dict(_) => "a dict",
        }
    }
}

impl Header {
    fn parse(text: &str) -> Result<Header, String> {
        let mut p = Parser { s: text.as_bytes(), i: 0 };
        let value = p.value(0)?;
        p.skip_ws();
        if p.i != p.s.len() {
            return Err(format!("unexpected text after the dict at byte {}", p.i));
        }
        let Py::Dict(entries) = value else {
            return Err(format!("expected a dict, found {}", value.describe()));
        };
        let get = |key: &str| entries.iter().find(|(k, _)| *k == Py::Str(key.into())).map(|(_, v)| v);
        let descr = match get("descr") {
            Some(Py::Str(s)) => s.clone(),
            // Structured dtypes are lists of fields.
            Some(Py::Seq(_)) => "a structured dtype".into(),
            Some(v) => return Err(format!("'descr' is {}, expected a string", v.describe())),
            None => return Err("'descr' is missing".into()),
        };
        let fortran_order = match get("fortran_order") {
            Some(Py::Bool(b)) => *b,
            Some(v) => return Err(format!("'fortran_order' is {}, expected True or False", v.describe())),
            None => return Err("'fortran_order' is missing".into()),
        };
        let shape = match get("shape") {
            Some(Py::Seq(items)) => items
                .iter()
                .map(|v| match v {
                    Py::Int(n) => Ok(*n),
                    v => Err(format!("'shape' holds {}, expected integers", v.describe())),
                })
                .collect::<Result<_, _>>()?,
            Some(v) => return Err(format!("'shape' is {}, expected a tuple", v.describe())),
            None => return Err("'shape' is missing".into()),
        };
        Ok(Header { descr, fortran_order, shape })
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.s.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.i).copied()
    }

    fn value(&mut self, depth: usize) -> Result<Py, String> {
        if depth > MAX_DEPTH {
            return Err("nested too deeply".into());
        }
        let at = self.i;
        match self.peek() {
            None => Err("unexpected end of the header".into()),
            Some(b'{') => {
                self.i += 1;
                let mut entries = Vec::new();
                loop {
                    if self.peek() == Some(b'}') {
                        self.i += 1;
                        return Ok(Py::Dict(entries));
                    }
                    let key = self.value(depth + 1)?;
                    if self.peek() != Some(b':') {
                        return Err(format!("expected ':' at byte {}", self.i));
                    }
                    self.i += 1;
                    let v = self.value(depth + 1)?;
                    entries.push((key, v));
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {}
                        _ => return Err(format!("expected ',' or '}}' at byte {}", self.i)),
                    }
                }
            }
            Some(open @ (b'(' | b'[')) => {
                let close = if open == b'(' { b')' } else { b']' };
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    if self.peek() == Some(close) {
                        self.i += 1;
                        return Ok(Py::Seq(items));
                    }
                    items.push(self.value(depth + 1)?);
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(c) if c == close => {}
                        _ => return Err(format!("expected ',' or '{}' at byte {}", close as char, self.i)),
                    }
                }
            }
            Some(q @ (b'\'' | b'"')) => {
                self.i += 1;
                let mut out = Vec::new();
                loop {
                    match self.s.get(self.i) {
                        None => return Err(format!("unterminated string starting at byte {at}")),
                        Some(&c) if c == q => {
                            self.i += 1;
                            break;
                        }
                        Some(b'\\') => {
                            let Some(&c) = self.s.get(self.i + 1) else {
                                return Err(format!("unterminated string starting at byte {at}"));
                            };
                            out.push(c);
                            self.i += 2;
                        }
                        Some(&c) => {
                            out.push(c);
                            self.i += 1;
                        }
                    }
                }
                String::from_utf8(out).map(Py::Str).map_err(|_| "a string is not valid text".into())
            }
            Some(c) if c.is_ascii_digit() => {
                let start = self.i;
                while self.s.get(self.i).is_some_and(|c| c.is_ascii_digit()) {
                    self.i += 1;
                }
                let digits = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
                let n = digits.parse::<u64>().map_err(|_| format!("integer {digits} is too large"))?;
                // Python 2 long suffix.
                if matches!(self.s.get(self.i), Some(b'L' | b'l')) {
                    self.i += 1;
                }
                Ok(Py::Int(n))
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.i;
                while self.s.get(self.i).is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_') {
                    self.i += 1;
                }
                match &self.s[start..self.i] {
                    b"True" => Ok(Py::Bool(true)),
                    b"False" => Ok(Py::Bool(false)),
                    b"None" => Ok(Py::None),
                    w => Err(format!("unknown word `{}` at byte {start}", String::from_utf8_lossy(w))),
                }
            }
            Some(c) => Err(format!("unexpected character {:?} at byte {}", c as char, self.i)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn p() -> PathBuf {
        PathBuf::from("data/x.npy")
    }

    fn values(a: &Array) -> Vec<f64> {
        let mut v = Vec::new();
        a.visit(0, a.len(), |x| v.push(x));
        v
    }

    fn with_header(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend([1, 0]);
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }

    #[test]
    fn round_trip_every_dtype_and_version() {
        let want: [f64; 6] = [1.0, -2.0, 3.0, 100.0, 0.0, -7.0];
        let le = |dt: Dtype| -> Vec<u8> {
            match dt {
                Dtype::U8 => want.iter().map(|&v| v.abs() as u8).collect(),
                Dtype::I8 => want.iter().flat_map(|&v| (v as i8).to_le_bytes()).collect(),
                Dtype::I16 => want.iter().flat_map(|&v| (v as i16).to_le_bytes()).collect(),
                Dtype::U16 => want.iter().flat_map(|&v| (v.abs() as u16).to_le_bytes()).collect(),
                Dtype::I32 => want.iter().flat_map(|&v| (v as i32).to_le_bytes()).collect(),
                Dtype::U32 => want.iter().flat_map(|&v| (v.abs() as u32).to_le_bytes()).collect(),
                Dtype::I64 => want.iter().flat_map(|&v| (v as i64).to_le_bytes()).collect(),
                Dtype::U64 => want.iter().flat_map(|&v| (v.abs() as u64).to_le_bytes()).collect(),
                Dtype::F32 => want.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect(),
                Dtype::F64 => want.iter().flat_map(|&v: &f64| v.to_le_bytes()).collect(),
            }
        };
        use Dtype::*;
        for dt in [U8, I8, I16, U16, I32, U32, I64, U64, F32, F64] {
            for major in [1, 2, 3] {
                let bytes = encode_version(dt, &[2, 3], &le(dt), major);
                assert_eq!((bytes.len() - 6 * dt.size()) % 64, 0);
                let a = parse(&p(), bytes).unwrap();
                assert_eq!((a.dtype, a.big_endian, a.shape.clone()), (dt, false, vec![2, 3]));
                let expect: Vec<f64> = if dt.is_integer() && matches!(dt, U8 | U16 | U32 | U64) {
                    want.map(f64::abs).to_vec()
                } else {
                    want.to_vec()
                };
                assert_eq!(values(&a), expect, "{dt:?} v{major}");
            }
        }
    }

    #[test]
    fn big_endian_and_tolerant_headers() {
        let data: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|v| v.to_be_bytes()).collect();
        let a = parse(&p(), with_header("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }\n", &data)).unwrap();
        assert_eq!(values(&a), vec![1.5, -2.0]);
        // Key order, double quotes, lists, no trailing comma, Python 2 longs, extra keys.
        let a = parse(
            &p(),
            with_header(
                "{\"shape\": [1L, 2L], \"fortran_order\": True, 'descr':'<i2', 'extra': {'a': (None, 'b')}}",
                &[1, 0, 2, 0],
            ),
        )
        .unwrap();
        assert_eq!((a.shape.clone(), values(&a)), (vec![1, 2], vec![1.0, 2.0]));
        // 0-d and 1-d arrays in Fortran order are the same bytes.
        let a = parse(&p(), with_header("{'descr': '|u1', 'fortran_order': True, 'shape': (3,)}", &[1, 2, 3])).unwrap();
        assert_eq!(a.shape, vec![3]);
    }

    #[test]
    fn fortran_order_is_refused() {
        let e =
            parse(&p(), with_header("{'descr': '|u1', 'fortran_order': True, 'shape': (2, 3)}", &[0; 6])).unwrap_err();
        assert!(matches!(e, Error::FortranOrder { .. }), "{e}");
        assert!(e.to_string().contains("np.ascontiguousarray"), "{e}");
    }

    #[test]
    fn unsupported_dtypes() {
        for d in ["<f2", "<c8", "|b1", "<U5", "|O", "", "<"] {
            let h = format!("{{'descr': '{d}', 'fortran_order': False, 'shape': (1,)}}");
            let e = parse(&p(), with_header(&h, &[0; 8])).unwrap_err();
            assert!(matches!(e, Error::UnsupportedDtype { .. }), "{d}: {e}");
        }
        let h = "{'descr': [('a', '<i4'), ('b', '<f4')], 'fortran_order': False, 'shape': (1,)}";
        assert!(matches!(parse(&p(), with_header(h, &[0; 8])), Err(Error::UnsupportedDtype { .. })));
    }

    #[test]
    fn malformed_headers() {
        let bad = [
            "",
            "{",
            "{'descr': '<f4'",
            "{'descr': '<f4', 'shape': (1,)}",
            "{'descr': '<f4', 'fortran_order': False}",
            "{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1.5,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': 4}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,)}",
            "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,)}",
            "{'descr: '<f4', 'fortran_order': False, 'shape': (1,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} junk",
            "['descr']",
        ];
        for h in bad {
            let e = parse(&p(), with_header(h, &[0; 4])).unwrap_err();
            assert!(matches!(e, Error::Npy { .. }), "{h}: {e}");
        }
        let deep =
            format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {}1{}}}", "(".repeat(100), ")".repeat(100));
        assert!(matches!(parse(&p(), with_header(&deep, &[0; 4])), Err(Error::Npy { .. })));
    }

    #[test]
    fn malformed_preambles() {
        let ok = encode(Dtype::U8, &[4], &[1, 2, 3, 4]);
        assert!(parse(&p(), ok.clone()).is_ok());
        for cut in [0, 3, 6, 7, 9, 20] {
            assert!(matches!(parse(&p(), ok[..cut].to_vec()), Err(Error::Npy { .. })), "cut at {cut}");
        }
        let mut v = ok.clone();
        v[6] = 4;
        let e = parse(&p(), v).unwrap_err();
        assert!(e.to_string().contains("version 4.0"), "{e}");
        let mut v = encode_version(Dtype::U8, &[4], &[1, 2, 3, 4], 2);
        v[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(parse(&p(), v), Err(Error::Npy { .. })));
    }

    #[test]
    fn payload_size_is_exact() {
        let e = parse(&p(), encode(Dtype::F32, &[2, 2], &[0; 15])).unwrap_err();
        assert!(matches!(e, Error::Truncated { expected: 16, got: 15, .. }), "{e}");
        let e = parse(&p(), encode(Dtype::F32, &[2, 2], &[0; 17])).unwrap_err();
        assert!(matches!(e, Error::TrailingBytes { expected: 16, got: 17, .. }), "{e}");
        let h = "{'descr': '<f8', 'fortran_order': False, 'shape': (18446744073709551615, 2)}";
        assert!(matches!(parse(&p(), with_header(h, &[])), Err(Error::DimsOverflow { .. })));
    }
}
